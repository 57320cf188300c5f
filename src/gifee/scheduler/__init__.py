"""The scheduler: pure filters and scores (core) and a shell that binds pending pods."""
