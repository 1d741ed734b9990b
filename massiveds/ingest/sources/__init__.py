"""Where input bytes come from: resolve a manifest's sources into a list of input files."""
