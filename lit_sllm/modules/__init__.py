"""LightningModules: one shared base, one thin module per recipe."""
