"""Pretraining stages whose results start a classifier (pretrain -> finetune)."""
