// The playground: streams completions from this server's /v1/completions, each choice in its own card.
// Model output is text, never HTML: it only ever goes into textContent.
"use strict";

const $ = (selector) => document.querySelector(selector);
const DEFAULTS = JSON.parse($("#defaults").textContent);
const NUMBERS = ["temperature", "top_p", "top_k", "repetition_penalty", "max_tokens", "n", "seed"];
const SAVED = "kogpt.playground";  // localStorage: the settings and the prompt
const KEY = "kogpt.playground.key";  // sessionStorage: the API key, for this tab only
const form = $("#settings");
const promptBox = $("#prompt");
let running = null;  // the AbortController of the request in flight

function stopsText(stops) {
  return stops.map((s) => s.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/\t/g, "\\t")).join("\n");
}

function parseStops(text) {
  const unescape = (line) => line.replace(/\\(n|t|\\)/g, (_, c) => ({ n: "\n", t: "\t", "\\": "\\" })[c]);
  return text.split("\n").filter((line) => line !== "").map(unescape);
}

function fill(values) {
  for (const name of NUMBERS) form.elements[name].value = values[name] ?? "";
  form.elements.stop.value = stopsText(values.stop ?? []);
}

function settings() {
  const body = {};
  for (const name of NUMBERS) {
    const text = form.elements[name].value.trim();
    if (text !== "") body[name] = Number(text);  // the server judges the value and says what is wrong
  }
  const stop = parseStops(form.elements.stop.value);
  if (stop.length) body.stop = stop;
  return body;
}

function save() {
  const values = Object.fromEntries(NUMBERS.map((name) => [name, form.elements[name].value]));
  values.stop = parseStops(form.elements.stop.value);
  try {
    localStorage.setItem(SAVED, JSON.stringify({ settings: values, prompt: promptBox.value }));
    sessionStorage.setItem(KEY, form.elements.api_key.value);
  } catch { /* storage off (private mode): nothing is kept */ }
}

function load() {
  let saved = null;
  try {
    saved = JSON.parse(localStorage.getItem(SAVED) || "null");
    form.elements.api_key.value = sessionStorage.getItem(KEY) || "";
  } catch { /* storage off or damaged: the server's defaults */ }
  fill(saved?.settings ?? DEFAULTS);
  if (saved?.prompt) promptBox.value = saved.prompt;
}

function headers() {
  const key = form.elements.api_key.value.trim();
  const given = { "Content-Type": "application/json" };
  if (key) given.Authorization = `Bearer ${key}`;
  return given;
}

function say(message, bad = false) {
  const status = $("#status");
  status.textContent = message;
  status.className = bad ? "error" : "muted";
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    message = (await response.json()).error.message;
  } catch { /* not an OpenAI error object */ }
  if (response.status === 401) message += " (type the server's key under API key)";
  return new Error(message);
}

async function showModel() {
  const label = $("#model");
  label.textContent = DEFAULTS.model;
  try {
    const response = await fetch("/v1/models", { headers: headers() });
    if (!response.ok) throw await failure(response);
    const model = (await response.json()).data[0];
    label.textContent = `${model.id} · context ${model.max_model_len} tokens`;
    if ($("#status").classList.contains("error")) say("");
  } catch (error) {
    say(error.message, true);
  }
}

// The data of each server-sent event of a streamed response, parsed; ends at [DONE].
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const lines = buffer.slice(0, end).split("\n");
      buffer = buffer.slice(end + 2);
      const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (data === "") continue;  // a keep-alive comment
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

class Card {
  constructor(index, started) {
    this.node = $("#choice").content.firstElementChild.cloneNode(true);
    this.node.dataset.index = index;
    this.node.querySelector(".index").textContent = `choice ${index}`;
    this.textNode = this.node.querySelector(".text");
    this.node.querySelector(".copy").addEventListener("click", (event) => copy(this.text, event.target));
    this.text = "";
    this.pieces = 0;
    this.tokens = null;  // exact, once known
    this.started = started;
    this.last = started;
    this.finish = null;
  }

  add(text, finish) {
    if (text) {
      this.text += text;
      this.pieces += 1;
      this.textNode.textContent = this.text;
    }
    this.last = performance.now();
    if (finish) this.finish = finish;
    this.show();
  }

  show(ending = this.finish) {
    // Each piece of text is at least one token; a token that ends inside a character (a half Hangul
    // syllable) waits for the next, so the count is exact only once the usage settles it.
    const tokens = this.tokens ?? this.pieces;
    const seconds = (this.last - this.started) / 1000;
    const rate = seconds > 0 ? (tokens / seconds).toFixed(1) : "–";
    const about = this.tokens === null ? "~" : "";
    this.node.querySelector(".figures").textContent = `${about}${tokens} tokens · ${about}${rate} tok/s`;
    this.node.querySelector(".finish").textContent = ending ? `· finish: ${ending}` : "";
    this.node.dataset.finish = ending ?? "";
  }
}

// Exact counts where the request settles them: a choice that hit max_tokens made exactly that many,
// and the usage's total leaves the one choice still unknown its remainder.
function settle(cards, usage, maxTokens) {
  for (const card of cards) if (card.finish === "length" && maxTokens !== undefined) card.tokens = maxTokens;
  const unknown = cards.filter((card) => card.tokens === null);
  if (usage && unknown.length === 1) {
    const known = cards.reduce((sum, card) => sum + (card.tokens ?? 0), 0);
    unknown[0].tokens = usage.completion_tokens - known;
  }
  cards.forEach((card) => card.show());
}

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {  // no clipboard API outside a secure context (http on a LAN address)
    const area = Object.assign(document.createElement("textarea"), { value: text });
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}

function busy(on) {
  $("#generate").disabled = on;
  $("#stop").disabled = !on;
  document.body.dataset.state = on ? "running" : "idle";
}

async function generate() {
  if (running) return;
  const prompt = promptBox.value;
  if (!prompt.trim()) {
    say("Type a prompt first", true);
    return;
  }
  save();
  const body = { prompt, ...settings(), stream: true, stream_options: { include_usage: true } };
  const started = performance.now();
  const cards = [];
  const card = (index) => {
    while (cards.length <= index) cards.push(new Card(cards.length, started));
    return cards[index];
  };
  const list = $("#choices");
  list.replaceChildren();
  card((body.n ?? DEFAULTS.n) - 1);
  cards.forEach((c) => { list.append(c.node); c.show(); });
  running = new AbortController();
  busy(true);
  say("Generating…");
  $("#summary").textContent = "";
  let usage = null;
  try {
    const response = await fetch("/v1/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: running.signal,
    });
    if (!response.ok) throw await failure(response);
    for await (const data of events(response)) {
      if (data.error) throw new Error(data.error.message);
      if (data.usage) usage = data.usage;
      for (const choice of data.choices) {
        const known = cards.length;
        card(choice.index).add(choice.text, choice.finish_reason);
        for (const c of cards.slice(known)) list.append(c.node);
      }
    }
    settle(cards, usage, body.max_tokens);
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const total = usage ? `${usage.completion_tokens} tokens in ${seconds} s` : `${seconds} s`;
    $("#summary").textContent = total;
    say("Done");
  } catch (error) {
    if (error.name === "AbortError") {
      cards.filter((c) => !c.finish).forEach((c) => c.show("stopped"));
      say("Stopped");
    } else {
      say(error.message, true);
    }
  } finally {
    running = null;
    busy(false);
  }
}

promptBox.addEventListener("keydown", (event) => {
  if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
  // While an IME composes (Hangul), Enter belongs to it; Safari reports the end of a composition
  // as keyCode 229 with isComposing already false.
  if (event.isComposing || event.keyCode === 229) return;
  event.preventDefault();
  generate();
});
$("#generate").addEventListener("click", generate);
$("#stop").addEventListener("click", () => running?.abort());
$("#reset").addEventListener("click", () => { fill(DEFAULTS); save(); });
form.addEventListener("submit", (event) => event.preventDefault());
form.addEventListener("change", save);
form.elements.api_key.addEventListener("change", showModel);
promptBox.addEventListener("change", save);
load();
busy(false);
if (DEFAULTS.key_required && !form.elements.api_key.value) {
  $("#model").textContent = DEFAULTS.model;
  say("This server needs an API key: type it under API key", true);
} else {
  showModel();
}
