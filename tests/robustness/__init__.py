"""What foliowalk promises under wrong input, hostile tables, killed writes and emulator aborts (README: Robustness)."""
