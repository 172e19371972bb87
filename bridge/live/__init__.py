"""Live audio: devices, the audio callback path, recording, the terminal mixer and the live session."""
