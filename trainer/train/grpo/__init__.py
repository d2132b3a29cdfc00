"""Reinforcement learning of the language model with group-relative advantages (GRPO: Shao et al., "DeepSeekMath",
2024) on TRL's `GRPOTrainer`: RecPO for the reasoning (`trainer.train.grpo.recpo`, R2ec) and the four-tag rating
reasoning (`trainer.train.grpo.rating`, RecZero), both over `trainer.train.grpo.run`."""
