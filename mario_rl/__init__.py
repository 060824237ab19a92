"""Double-DQN agents for NES Super Mario Bros, trained with PyTorch Lightning and Hydra."""
