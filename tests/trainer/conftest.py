"""Puts this folder on the import path (pytest prepends a conftest's folder), so every trainer test can
import `trainer_helpers`."""
