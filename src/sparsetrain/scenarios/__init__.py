"""sparsetrain.scenarios"""
