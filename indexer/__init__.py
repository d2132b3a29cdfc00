"""The item catalog and the FAISS item index (build, persist, add/remove/search); no torch models here."""
