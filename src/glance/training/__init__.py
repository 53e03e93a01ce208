"""Training of the surrogates: losses, tasks, loop and checkpoints."""
