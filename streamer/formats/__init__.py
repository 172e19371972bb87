"""File formats the project writes and reads beyond plain audio files: Native Instruments Stem files
(:mod:`streamer.formats.nistem`) and the MP4 box code under them (:mod:`streamer.formats.mp4box`)."""
from .nistem import (NI_COLORS, NI_STEMS, StemFile, find_ffmpeg, is_stem_path, match_stems,
                     parse_stem_order, read_stem_file, read_stem_metadata, read_tags, write_stem_file)

__all__ = ["NI_COLORS", "NI_STEMS", "StemFile", "find_ffmpeg", "is_stem_path", "match_stems",
           "parse_stem_order", "read_stem_file", "read_stem_metadata", "read_tags", "write_stem_file"]
