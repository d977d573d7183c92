"""Core models, the Backend protocol and pure policy; imports only stdlib, attrs and msgspec."""
