"""sparsetrain.backends"""
