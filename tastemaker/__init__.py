"""tastemaker: artist recommendations from raw click events to a served API."""

__version__ = "0.1.0"
