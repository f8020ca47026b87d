"""sparsetrain.engine"""
