# Set-up and main jobs. `make demo` and `make test` each do all set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH_VERSION := 2.13.0

.PHONY: install demo test bench clean synth-deps live-deps device-wheels

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# torch first, pinned, so nothing later can pull a different build
	$(PY) -m pip install torch==$(TORCH_VERSION)
	$(PY) -m pip install -e '.[dev,cluster,serve]'
	touch $(STAMP)

install: $(STAMP) live-deps

demo: $(STAMP)
	$(VENV)/bin/stemstream demo --out out/demo

test: $(STAMP) synth-deps live-deps
	$(PY) -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/stemstream bench-model --config tests/data/msst-configs/config_vocals_bs_roformer.yaml \
		--config tests/data/msst-configs/config_vocals_mel_band_roformer.yaml --seconds 0.5 1 2 2.98

clean:
	rm -rf $(VENV) out

# Wheels an offline GPU machine with a CUDA Python image lacks (Python 3.12, manylinux x86-64), for
# `python3 -m streamer.lab.gpu_run OUT` there: the versions installed here, into the ignored folder
# .whl/ (see README, "GPU check"). Override the list with DEVICE_WHEELS="...".
DEVICE_WHEELS ?= rotary-embedding-torch mido soundfile cffi pycparser soxr pedalboard
device-wheels: $(STAMP)
	rm -rf .whl && mkdir -p .whl
	for pkg in $(DEVICE_WHEELS); do \
		ver=$$($(PY) -c "import importlib.metadata as m; print(m.version('$$pkg'))") || exit 1; \
		$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
			--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
			--platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$$pkg==$$ver" || exit 1; \
	done
	ls -la .whl

# Debian packages the song generator (stemstream synth) needs
synth-deps:
	@if command -v mma >/dev/null && command -v fluidsynth >/dev/null && command -v espeak-ng >/dev/null \
		&& [ -e /usr/share/sounds/sf2/TimGM6mb.sf2 ] && [ -e /usr/share/sounds/sf2/FluidR3_GM.sf2 ]; then :; else \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		mma fluidsynth timgm6mb-soundfont fluid-soundfont-gm espeak-ng; fi

# Debian packages live audio needs: PortAudio (sounddevice loads it) for `stemstream live`, the JACK
# server with its tools (jackd -d dummy: an audio device without a sound card; jack_connect, jack_metro,
# jack_rec) and liblo's oscsend/oscdump (an independent OSC implementation) for the live and OSC tests.
# ffmpeg (and ffprobe) write and read NI Stem files (separate --format stem).
# libasound2 and libjack-jackd2-0: python-rtmidi's ALSA and JACK MIDI (stemstream live --midi).
# chromium and chromium-driver: a headless browser for the browser mixer's tests (selenium drives it).
# nginx-light: the reverse proxy the service's TLS test runs in front of `stemstream serve`.
# jackd2 asks whether to enable real-time scheduling: answered "no" up front.
live-deps:
	@if command -v jackd >/dev/null && command -v jack_metro >/dev/null && command -v jack_rec >/dev/null \
		&& command -v oscsend >/dev/null && command -v oscdump >/dev/null \
		&& command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null \
		&& command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v nginx >/dev/null \
		&& ldconfig -p | grep -q libportaudio.so.2 \
		&& ldconfig -p | grep -q libasound.so.2 && ldconfig -p | grep -q libjack.so.0; then :; else \
		echo "jackd2 jackd/tweak_rt_limits boolean false" | debconf-set-selections; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		libportaudio2 jackd2 liblo-tools ffmpeg libasound2 libjack-jackd2-0 chromium chromium-driver nginx-light; fi
