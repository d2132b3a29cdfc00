"""The ground floor every other package stands on: the `Item` and `Catalog` types, the `ModelFingerprint` of what
made a vector, where artifacts live, and durable (fsynced, atomic) file writes. Imports nothing of the project."""
