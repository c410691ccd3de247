// A Server-Sent Events parser (the WHATWG "event stream" format) for a stream read with fetch(): EventSource
// cannot send the bearer header. Feed it decoded text as it arrives, in chunks of any size; it calls back per
// complete event. Lines end with CRLF, LF or CR; a line starting with ":" is a comment; fields are
// id / event / data (repeated data lines join with "\n") / retry; an unknown field is ignored.

/**
 * A parser with callbacks `onEvent({type, data, id})` (type "message" when the event names none; `id` is the
 * last event id so far), `onComment(text)`, `onRetry(ms)` and `onId(id)` (an id-only message moved the last event
 * id), and the `lastEventId` a reconnection resumed after.
 * `feed(text)` takes the next chunk. `lastEventId` is the id of the last complete event (the Last-Event-ID of the
 * next reconnection: an event cut off halfway is not done).
 */
export function createParser({ onEvent = () => {}, onComment = () => {}, onRetry = () => {}, onId = () => {}, lastEventId: resumeId = "" } = {}) {
  let buffer = "";
  let first = true; // a byte order mark may open the stream
  let afterCR = false; // the previous chunk ended with CR: a LF opening this one belongs to that line end
  let type = "";
  let data = [];
  let idBuffer = resumeId; // the id field seen so far; it becomes the last event id when the event is complete
  let lastEventId = resumeId;

  function dispatch() {
    const moved = idBuffer !== lastEventId;
    lastEventId = idBuffer;
    if (data.length) onEvent({ type: type || "message", data: data.join("\n"), id: lastEventId });
    else if (moved) onId(lastEventId); // an id-only message: where to resume, without an event
    type = "";
    data = [];
  }

  function line(text) {
    if (text === "") return dispatch();
    if (text[0] === ":") return onComment(text.slice(1).replace(/^ /, ""));
    const colon = text.indexOf(":");
    const field = colon < 0 ? text : text.slice(0, colon);
    const value = colon < 0 ? "" : text.slice(colon + 1).replace(/^ /, "");
    if (field === "data") data.push(value);
    else if (field === "event") type = value;
    else if (field === "id") {
      if (!value.includes("\0")) idBuffer = value;
    } else if (field === "retry" && /^\d+$/.test(value)) onRetry(Number(value));
  }

  function feed(chunk) {
    let text = String(chunk);
    if (first && text) {
      if (text[0] === "\uFEFF") text = text.slice(1);
      first = false;
    }
    if (afterCR && text[0] === "\n") text = text.slice(1);
    afterCR = false;
    buffer += text;
    let start = 0;
    for (let i = 0; i < buffer.length; i++) {
      const c = buffer[i];
      if (c !== "\n" && c !== "\r") continue;
      const end = i;
      if (c === "\r") {
        if (i + 1 < buffer.length) {
          if (buffer[i + 1] === "\n") i++;
        } else {
          afterCR = true;
        }
      }
      line(buffer.slice(start, end));
      start = i + 1;
    }
    buffer = buffer.slice(start);
  }

  return {
    feed,
    get lastEventId() {
      return lastEventId;
    },
  };
}
