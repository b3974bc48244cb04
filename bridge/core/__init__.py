"""The pure core: extraction, hashing, diffing, payloads, signing and retry policy.

Nothing here does I/O or reads the clock; time is passed in.
"""
