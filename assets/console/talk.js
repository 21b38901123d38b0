// "Talk to your agent": a browser call through the same bridge as a phone call.
//
// POST /web/calls gives a call id and a stream URL with a single-use token; the page opens
// that WebSocket, and one AudioWorklet node (audio-worklet.js) turns the microphone into
// 20 ms μ-law frames and plays the agent's frames back through a jitter buffer.

import { api } from './api.js';
import { h, replace } from './dom.js';
import { fromBase64, toBase64 } from './mulaw.js';

export const title = 'Talk to your agent';

/** The call in progress, if any (kept across views so leaving the page does not drop it). */
let line = null;

export function render(main) {
  const status = h('p', { id: 'talk-status', role: 'status', 'aria-live': 'polite' }, 'Ready.');
  const button = h('button', { id: 'talk-button', type: 'button', class: 'big' }, 'Start talking');
  const micMeter = h('meter', { id: 'mic-level', min: 0, max: 1, value: 0, 'aria-label': 'Your microphone level' });
  const speakerMeter = h('meter', { id: 'agent-level', min: 0, max: 1, value: 0, 'aria-label': 'The agent\'s level' });
  const stats = h('output', { id: 'talk-stats', dataset: { received: 0, played: 0, peak: 0 } }, '');
  const link = h('p', { id: 'talk-record' });
  const ui = { status, button, micMeter, speakerMeter, stats, link };

  replace(main, h('section', { class: 'card', 'aria-labelledby': 'talk-title' },
    h('h1', { id: 'talk-title' }, 'Talk to your agent'),
    h('p', { class: 'hint' },
      'Your microphone goes to the agent exactly as a caller\'s phone would: the same prompt, voice, tools, transcript and barge-in. ',
      'Use headphones, or the agent hears itself.'),
    button,
    status,
    h('div', { class: 'meters' },
      h('label', { for: 'mic-level' }, 'You'), micMeter,
      h('label', { for: 'agent-level' }, 'Agent'), speakerMeter),
    stats,
    link));

  button.addEventListener('click', () => (line ? line.hangUp('you hung up') : call(ui)));
  if (line) line.attach(ui);
  return () => line?.detach();
}

async function call(ui) {
  ui.button.disabled = true;
  ui.status.textContent = 'Asking the microphone…';
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
  } catch (error) {
    ui.status.textContent = `No microphone: ${error.message}. Allow this page to use the microphone and try again.`;
    ui.button.disabled = false;
    return;
  }
  ui.status.textContent = 'Calling the agent…';
  let created;
  try {
    created = await api('/web/calls', { method: 'POST' });
  } catch (refusal) {
    media.getTracks().forEach((track) => track.stop());
    ui.status.textContent = `The call could not be placed: ${refusal.message}`;
    ui.button.disabled = false;
    return;
  }
  line = new Line(created, media, ui);
  try {
    await line.open();
  } catch (error) {
    line.hangUp(`the audio could not start: ${error.message}`);
  }
}

/** One browser call: the microphone, the audio node and the socket. */
class Line {
  constructor(created, media, ui) {
    this.id = created.id;
    this.streamUrl = created.stream_url;
    this.media = media;
    this.ui = ui;
    this.received = 0;
    this.played = 0;
    this.peak = 0;
    this.ended = false;
  }

  async open() {
    this.context = new AudioContext({ latencyHint: 'interactive' });
    await this.context.audioWorklet.addModule('/console/audio-worklet.js');
    this.node = new AudioWorkletNode(this.context, 'phone-line', {
      numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
    });
    this.context.createMediaStreamSource(this.media).connect(this.node);
    this.node.connect(this.context.destination);
    await this.context.resume();

    const url = new URL(this.streamUrl, location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    this.socket = new WebSocket(url);
    this.socket.onopen = () => {
      this.socket.send(JSON.stringify({ event: 'start' }));
      this.say('Connected: say hello.');
      this.ui.button.textContent = 'Hang up';
      this.ui.button.disabled = false;
      this.ui.button.classList.add('danger');
      this.showRecordLink();
    };
    this.socket.onmessage = (event) => this.fromServer(event.data);
    this.socket.onclose = (event) => this.end(event.reason || (event.code === 1000 ? 'the call ended' : `the connection closed (code ${event.code})`));
    this.node.port.onmessage = (event) => this.fromAudio(event.data);
  }

  fromServer(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    if (message.event === 'media' && message.media?.payload) {
      this.received++;
      this.node.port.postMessage({ type: 'frame', bytes: fromBase64(message.media.payload) });
    } else if (message.event === 'mark' && message.mark) {
      this.node.port.postMessage({ type: 'mark', name: message.mark.name });
    } else if (message.event === 'clear') {
      this.node.port.postMessage({ type: 'clear' });
      this.send({ event: 'clear' });
    }
  }

  fromAudio(message) {
    if (message.type === 'frame') {
      this.send({ event: 'media', media: { payload: toBase64(message.bytes) } });
    } else if (message.type === 'mark-played') {
      this.send({ event: 'mark', mark: { name: message.name } });
    } else if (message.type === 'stats') {
      this.played = message.framesPlayed;
      this.peak = Math.max(this.peak, message.speakerPeak);
      this.ui.micMeter.value = Math.min(1, message.micLevel * 2);
      this.ui.speakerMeter.value = Math.min(1, message.speakerLevel * 2);
      this.showStats();
    }
  }

  send(message) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  showStats() {
    const { stats } = this.ui;
    stats.dataset.received = this.received;
    stats.dataset.played = this.played;
    stats.dataset.peak = this.peak.toFixed(4);
    stats.textContent = `${this.received} frames received, ${this.played} played`;
  }

  showRecordLink() {
    replace(this.ui.link, 'This call: ', h('a', { href: `#/calls/${encodeURIComponent(this.id)}` }, this.id));
  }

  say(text) {
    this.ui.status.textContent = text;
  }

  hangUp(why) {
    this.send({ event: 'stop' });
    this.socket?.close(1000, 'hung up');
    this.end(why);
  }

  end(why) {
    if (this.ended) return;
    this.ended = true;
    this.media.getTracks().forEach((track) => track.stop());
    this.context?.close();
    this.say(`Call ended: ${why}.`);
    this.showStats();
    this.ui.button.textContent = 'Start talking';
    this.ui.button.classList.remove('danger');
    this.ui.button.disabled = false;
    this.ui.micMeter.value = 0;
    this.ui.speakerMeter.value = 0;
    line = null;
  }

  /** The view was shown again while the call goes on: drive the new elements. */
  attach(ui) {
    this.ui = ui;
    ui.button.textContent = 'Hang up';
    ui.button.classList.add('danger');
    this.say('In a call.');
    this.showRecordLink();
  }

  /** The view was left: keep talking, stop drawing. */
  detach() {
    this.ui = detachedUi();
  }
}

/** Stand-in elements while the talk view is not shown. */
function detachedUi() {
  const element = () => document.createElement('span');
  return {
    status: element(), button: document.createElement('button'), micMeter: document.createElement('meter'),
    speakerMeter: document.createElement('meter'), stats: document.createElement('output'), link: element(),
  };
}
