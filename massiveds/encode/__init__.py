"""Text to vectors: chunking documents into passages, embedding them, and the FAISS index plan, training and adds."""
