"""Small in-process fake servers for fault injection (the real ones are in tests/interop)."""
