"""sparsetrain.sparse"""
