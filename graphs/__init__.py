"""Ready-made architectures, built only from serket's public API."""
