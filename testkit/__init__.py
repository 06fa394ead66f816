"""The unshipped test kit: what tests/ and bench/ share (they never import each other)."""
