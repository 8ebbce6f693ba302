// The text/event-stream format (the HTML standard's server-sent events), parsed from text that
// arrives in chunks split anywhere.

/** Collects events from chunks of a decoded text/event-stream. Not thread-safe (one reader). */
export class SseParser {
  constructor() {
    this.buffer = '';
    this.pendingCr = false;
  }

  /** Adds the next chunk; returns the events it completed, in order: { type, data }. Lines
   *  may end in "\n", "\r\n" or "\r"; "event:" names an event ("message" by default), its
   *  "data:" lines are joined by "\n", lines starting with ":" are comments; an event without
   *  data is dropped. */
  push(chunk) {
    let text = this.pendingCr ? `\r${chunk}` : chunk;
    // A "\r" at the end may be the first half of a "\r\n" in the next chunk.
    this.pendingCr = text.endsWith('\r');
    if (this.pendingCr) text = text.slice(0, -1);
    this.buffer += text.replace(/\r\n?/g, '\n');
    const events = [];
    let end;
    while ((end = this.buffer.indexOf('\n\n')) >= 0) {
      const event = parseBlock(this.buffer.slice(0, end));
      this.buffer = this.buffer.slice(end + 2);
      if (event !== null) events.push(event);
    }
    return events;
  }
}

function parseBlock(block) {
  let type = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') type = value;
    else if (field === 'data') data.push(value);
  }
  return data.length === 0 ? null : { type, data: data.join('\n') };
}
