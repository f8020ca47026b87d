"""sparsetrain.experiments"""
