"""Contrastive LoRA training of the LLM's user and item vectors (`reasonrec train-cl`; docs/design.md section 5, CL):
`config` (settings and TOML recipes), `samples`, `loss` (full softmax over the item table), `layer_cache`, `job`
(the training loop) and `report`. See `docs/training-cl.md`."""
