// The browser's phone line, on the audio thread. One node does both directions:
//
// - its input (the microphone, at the context's rate) is low-pass filtered, resampled to
//   8 kHz, μ-law encoded and posted to the page as 160-byte (20 ms) frames;
// - its output plays the agent's μ-law frames the page posts in, through a jitter buffer
//   that waits for a few frames before it starts and again after it runs dry, so network
//   jitter does not turn into clicks.
//
// Marks travel with the audio: when playback reaches one, the page is told, and tells the
// server (that is how the server knows a goodbye was heard). A clear drops everything queued.

import { DECODE_TABLE, encodeSample } from './mulaw.js';

const PHONE_RATE = 8000;
const FRAME_SAMPLES = 160;
/** Frames held before playback starts (and restarts after running dry): 60 ms. */
const PREBUFFER_FRAMES = 3;
/** Low-pass taps before decimating the microphone to 8 kHz. */
const TAPS = 63;
/** How often the page hears the meters. */
const STATS_EVERY_SECONDS = 0.1;

/** A windowed-sinc low-pass at `cutoff` Hz for signals at `rate` Hz. */
function lowPass(cutoff, rate, taps) {
  const fc = cutoff / rate;
  const middle = (taps - 1) / 2;
  const kernel = new Float32Array(taps);
  let sum = 0;
  for (let n = 0; n < taps; n++) {
    const x = n - middle;
    const sinc = x === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * x) / (Math.PI * x);
    const blackman = 0.42 - 0.5 * Math.cos((2 * Math.PI * n) / (taps - 1)) + 0.08 * Math.cos((4 * Math.PI * n) / (taps - 1));
    kernel[n] = sinc * blackman;
    sum += kernel[n];
  }
  for (let n = 0; n < taps; n++) kernel[n] /= sum;
  return kernel;
}

class PhoneLine extends AudioWorkletProcessor {
  constructor() {
    super();
    // Microphone → 8 kHz μ-law.
    this.kernel = lowPass(3600, sampleRate, TAPS);
    this.history = new Float32Array(TAPS);
    this.historyAt = 0;
    this.step = sampleRate / PHONE_RATE;
    this.phase = 0;
    this.previous = 0;
    this.frame = new Uint8Array(FRAME_SAMPLES);
    this.frameAt = 0;
    this.micPeak = 0;
    // Agent → speakers. The queue holds Float32Array frames and {mark} entries, in order.
    this.queue = [];
    this.queuedFrames = 0;
    this.playing = false;
    this.current = null;
    this.currentAt = 0;
    this.outPhase = 0;
    this.outPrevious = 0;
    this.outNext = 0;
    this.framesPlayed = 0;
    this.outPeak = 0;
    this.outPeakEver = 0;
    this.statsDue = 0;
    this.port.onmessage = (event) => this.command(event.data);
  }

  command(message) {
    if (message.type === 'frame') {
      const samples = new Float32Array(message.bytes.length);
      for (let i = 0; i < samples.length; i++) samples[i] = DECODE_TABLE[message.bytes[i]];
      this.queue.push(samples);
      this.queuedFrames++;
    } else if (message.type === 'mark') {
      this.queue.push({ mark: message.name });
      // A mark closes a turn: play what is queued even if it is shorter than the prebuffer.
      if (this.queuedFrames > 0) this.playing = true;
    } else if (message.type === 'clear') {
      // Barge-in: drop everything; marks still queued are answered, as a phone would.
      for (const entry of this.queue) {
        if (!(entry instanceof Float32Array)) this.port.postMessage({ type: 'mark-played', name: entry.mark });
      }
      this.queue = [];
      this.queuedFrames = 0;
      this.current = null;
      this.playing = false;
    }
  }

  /** The next 8 kHz sample to play, or 0 while buffering. */
  nextPhoneSample() {
    if (!this.playing) {
      if (this.queuedFrames < PREBUFFER_FRAMES) {
        this.answerLeadingMarks();
        return 0;
      }
      this.playing = true;
    }
    while (!this.current || this.currentAt >= this.current.length) {
      if (this.current) this.framesPlayed++;
      this.current = null;
      this.answerLeadingMarks();
      const next = this.queue.shift();
      if (!next) {
        this.playing = false; // ran dry: buffer again before resuming
        return 0;
      }
      this.queuedFrames--;
      this.current = next;
      this.currentAt = 0;
    }
    return this.current[this.currentAt++];
  }

  answerLeadingMarks() {
    while (this.queue.length && !(this.queue[0] instanceof Float32Array)) {
      this.port.postMessage({ type: 'mark-played', name: this.queue.shift().mark });
    }
  }

  capture(input) {
    for (let i = 0; i < input.length; i++) {
      this.history[this.historyAt] = input[i];
      this.historyAt = (this.historyAt + 1) % TAPS;
      let filtered = 0;
      for (let k = 0, at = this.historyAt; k < TAPS; k++, at = (at + 1) % TAPS) filtered += this.kernel[k] * this.history[at];
      this.micPeak = Math.max(this.micPeak, Math.abs(input[i]));
      // Linear interpolation between the previous and this filtered sample.
      while (this.phase < 1) {
        const sample = this.previous + (filtered - this.previous) * this.phase;
        this.frame[this.frameAt++] = encodeSample(sample * 32767);
        if (this.frameAt === FRAME_SAMPLES) {
          this.port.postMessage({ type: 'frame', bytes: this.frame.slice() });
          this.frameAt = 0;
        }
        this.phase += this.step;
      }
      this.phase -= 1;
      this.previous = filtered;
    }
  }

  play(output) {
    const ratio = PHONE_RATE / sampleRate;
    for (let i = 0; i < output.length; i++) {
      this.outPhase += ratio;
      while (this.outPhase >= 1) {
        this.outPhase -= 1;
        this.outPrevious = this.outNext;
        this.outNext = this.nextPhoneSample();
      }
      const sample = this.outPrevious + (this.outNext - this.outPrevious) * this.outPhase;
      output[i] = sample;
      this.outPeak = Math.max(this.outPeak, Math.abs(sample));
    }
  }

  process(inputs, outputs) {
    const input = inputs[0] && inputs[0][0];
    if (input) this.capture(input);
    const output = outputs[0];
    if (output && output[0]) {
      this.play(output[0]);
      for (let channel = 1; channel < output.length; channel++) output[channel].set(output[0]);
    }
    this.statsDue -= (output && output[0] ? output[0].length : 128) / sampleRate;
    if (this.statsDue <= 0) {
      this.statsDue = STATS_EVERY_SECONDS;
      this.outPeakEver = Math.max(this.outPeakEver, this.outPeak);
      this.port.postMessage({
        type: 'stats',
        framesPlayed: this.framesPlayed,
        bufferedMs: this.queuedFrames * 20,
        speakerLevel: this.outPeak,
        speakerPeak: this.outPeakEver,
        micLevel: this.micPeak,
      });
      this.outPeak = 0;
      this.micPeak = 0;
    }
    return true;
  }
}

registerProcessor('phone-line', PhoneLine);
