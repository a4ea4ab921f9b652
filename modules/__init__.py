"""The module library: generative models that plug into a serket graph."""
