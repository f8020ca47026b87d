"""sparsetrain.algorithms"""
