"""The Roformer models in pure torch: band tables, transformer layers, BS-RoFormer and Mel-Band RoFormer.

Nothing here knows about files, streams or devices; ``streamer.msst`` builds these from MSST configs.
"""
