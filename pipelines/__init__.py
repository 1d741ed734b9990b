"""Ray wiring of the massiveds build: the stage graph, resources, progress and resume."""
