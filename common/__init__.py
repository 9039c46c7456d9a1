"""Shared training core: distributed world, config, LR scaling, multi-resolution stages, Trainer."""
