"""Puts this folder on the import path (pytest prepends a conftest's folder), so the contrastive tests can
import `cl_helpers`."""
