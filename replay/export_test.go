package replay

// FreeSlots is how many of the pool's VFS names no replay holds.
func FreeSlots() int { return len(slots) }
