"""sparsetrain.reporting"""
