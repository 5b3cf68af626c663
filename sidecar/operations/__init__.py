"""Operations: the daemon's use cases, typed inputs and results, knowing no HTTP."""
