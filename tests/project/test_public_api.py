"""The public face stays put: the API names users import and every CLI command with its flags."""
import argparse

import bridge
import streamer
from bridge.cli.main import build_parser

API = ["load_config", "build_model", "load_checkpoint", "read_state_dict", "demix", "demix_tta", "StreamEngine",
       "StreamSettings", "PRESETS", "preset_settings", "Config", "BSRoformer", "MelBandRoformer", "load_model",
       "StemstreamError", "ConfigError", "CheckpointError", "AudioError", "SettingsError", "WorkerError"]

# every command with its options and positional arguments (issue 11 kept them; later issues add, never remove)
CLI_FLAGS = {'separate': ['--backend',
              '--batch-size',
              '--bits',
              '--checkpoint',
              '--chunk-size',
              '--codec',
              '--config',
              '--cpus-per-worker',
              '--device',
              '--fail-fast',
              '--format',
              '--gpus-per-worker',
              '--help',
              '--instrumental',
              '--local-cpus',
              '--model-name',
              '--model-type',
              '--no-progress',
              '--num-overlap',
              '--out',
              '--output-rate',
              '--precision',
              '--ray',
              '--recursive',
              '--remote',
              '--residual',
              '--split-seconds',
              '--stem-order',
              '--subtype',
              '--token',
              '--trust-checkpoint',
              '--tta',
              '--wire',
              '--workers',
              '-h',
              'inputs'],
 'serve': ['--allow',
           '--batch-wait-ms',
           '--checkpoint',
           '--config',
           '--cpus-per-replica',
           '--gpus-per-replica',
           '--help',
           '--host',
           '--local-cpus',
           '--log-every',
           '--max-batch',
           '--max-streams-per-client',
           '--model',
           '--name',
           '--port',
           '--precision',
           '--preset',
           '--ray',
           '--replicas',
           '--rig',
           '--token',
           '-h'],
 'inspect': ['--config', '--help', '--trust-checkpoint', '-h', 'checkpoint'],
 'demo': ['--backend', '--block', '--config', '--help', '--out', '--preset', '--song', '-h'],
 'fetch-real': ['--cache', '--help', '--out', '-h'],
 'eval': ['--backend',
          '--checkpoint',
          '--config',
          '--device',
          '--help',
          '--model-type',
          '--plot',
          '--precision',
          '--presets',
          '--residual',
          '--seconds',
          '--setting',
          '--trust-checkpoint',
          '-h',
          'data'],
 'synth': ['--count', '--help', '--out', '--seconds', '--seed', '-h'],
 'train': ['--batch-size',
           '--config',
           '--device',
           '--ema',
           '--grow',
           '--help',
           '--init',
           '--lr',
           '--max-minutes',
           '--no-augment',
           '--out',
           '--resume',
           '--seed',
           '--segment',
           '--steps',
           '--threads',
           '--trust-checkpoint',
           '--val',
           '--val-every',
           '--val-seconds',
           '-h',
           'data'],
 'bench': ['--allowance',
           '--backend',
           '--block',
           '--checkpoint',
           '--config',
           '--crossfade-ms',
           '--device',
           '--help',
           '--hop',
           '--lookahead',
           '--precision',
           '--preset',
           '--seconds',
           '--threads',
           '--trust-checkpoint',
           '--window',
           '--worker',
           '-h'],
 'bench-model': ['--compare', '--config', '--device', '--help', '--repeats', '--seconds', '--threads', '-h'],
 'bench-mixer': ['--block', '--blocks', '--buses', '--help', '--stems', '-h'],
 'bench-gpu': ['--budget', '--dry-run', '--help', '-h', 'out'],
 'devices': ['--help', '--json', '-h'],
 'live': ['--backend',
          '--blocksize',
          '--buses',
          '--checkpoint',
          '--config',
          '--device',
          '--gain',
          '--help',
          '--hop',
          '--in-channels',
          '--input',
          '--input-file',
          '--latency',
          '--lookahead',
          '--loop',
          '--model-name',
          '--model-type',
          '--mute',
          '--network-allowance',
          '--no-ui',
          '--osc',
          '--osc-allow',
          '--osc-host',
          '--osc-tcp',
          '--output',
          '--precision',
          '--record',
          '--remote',
          '--residual',
          '--rig',
          '--route',
          '--seconds',
          '--solo',
          '--token',
          '--trust-checkpoint',
          '--window',
          '--wire',
          '-h']}


def test_streamer_api():
    for name in API:
        assert hasattr(streamer, name), name
        assert name in streamer.__all__, name
    assert issubclass(streamer.SettingsError, ValueError)
    assert issubclass(streamer.SettingsError, streamer.StemstreamError)


def test_bridge_api():
    for name in ("StemSeparator", "Chain", "StemMixer", "OSCControl"):
        assert name in bridge.__all__
    assert callable(bridge.StemSeparator.from_config) and callable(bridge.StemSeparator.from_rig)


def test_console_script_target_is_importable():
    from bridge.cli import main

    assert callable(main)


def test_cli_commands_and_flags():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    got = {name: sorted(o for a in sp._actions for o in a.option_strings)
                 + sorted(a.dest for a in sp._actions if not a.option_strings)
           for name, sp in sub.choices.items()}
    assert got == CLI_FLAGS
