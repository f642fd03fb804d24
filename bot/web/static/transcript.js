// patchwright task page: search within the attempt logs, and follow the running attempt live.
//
// Search: shows the search box (hidden without JavaScript), hides the transcript entries that
// do not contain the text, marks the matches (<mark>, created with text nodes only) and opens
// the folded parts holding one.
//
// Follow: the server renders the running attempt's list with data-follow, data-stream and
// data-after (the last batch's seq). This script subscribes to <data-stream>?attempt=N&after=SEQ
// and appends each `log` event's entries (HTML rendered and escaped by the server) to the
// list of that attempt, unless the list already holds that batch (seq <= data-after); an
// `end` event closes the stream. dashboard.js replaces <main> when the task changes: a
// MutationObserver then attaches again — the new list holds every batch up to its render, the
// stream carries on, a new running attempt gets a stream of its own — and the search text and
// focus are put back. body[data-log-events] counts the batches appended.
(function () {
  "use strict";
  var content = document.getElementById("content");
  if (!content) {
    return;
  }
  var MATCHES = { none: "no entry matches", one: "1 entry matches", many: " entries match" };
  var body = document.body;
  var query = "";
  var searchFocused = false;
  var source = null;
  var followed = null; // the attempt number followed, as a string
  var appended = 0;

  // -- search ---------------------------------------------------------------------------

  function unmark(root) {
    var marks = root.querySelectorAll("mark.hit");
    for (var i = 0; i < marks.length; i++) {
      var parent = marks[i].parentNode;
      parent.replaceChild(document.createTextNode(marks[i].textContent), marks[i]);
      parent.normalize();
    }
    var opened = root.querySelectorAll("details[data-search-opened]");
    for (var j = 0; j < opened.length; j++) {
      opened[j].open = false;
      opened[j].removeAttribute("data-search-opened");
    }
  }

  function mark(entry, needle) {
    var walker = document.createTreeWalker(entry, NodeFilter.SHOW_TEXT);
    var nodes = [];
    while (walker.nextNode()) {
      nodes.push(walker.currentNode);
    }
    nodes.forEach(function (node) {
      var text = node.nodeValue;
      var lower = text.toLowerCase();
      var at = lower.indexOf(needle);
      if (at < 0 || (node.parentNode && node.parentNode.tagName === "TIME")) {
        return;
      }
      var fragment = document.createDocumentFragment();
      var from = 0;
      while (at >= 0) {
        fragment.appendChild(document.createTextNode(text.slice(from, at)));
        var hit = document.createElement("mark");
        hit.className = "hit";
        hit.textContent = text.slice(at, at + needle.length);
        fragment.appendChild(hit);
        from = at + needle.length;
        at = lower.indexOf(needle, from);
      }
      fragment.appendChild(document.createTextNode(text.slice(from)));
      var details = node.parentNode.closest("details");
      while (details && entry.contains(details)) {
        if (!details.open) {
          details.open = true;
          details.setAttribute("data-search-opened", "1");
        }
        details = details.parentNode.closest("details");
      }
      node.parentNode.replaceChild(fragment, node);
    });
  }

  function filter(entries) {
    var needle = query.trim().toLowerCase();
    var shown = 0;
    for (var i = 0; i < entries.length; i++) {
      var entry = entries[i];
      unmark(entry);
      var hit = !needle || entry.textContent.toLowerCase().indexOf(needle) >= 0;
      entry.hidden = !hit;
      if (hit && needle) {
        mark(entry, needle);
        shown += 1;
      }
    }
    return shown;
  }

  function search() {
    var entries = content.querySelectorAll("ol.transcript > li.entry");
    var shown = filter(entries);
    var logs = content.querySelectorAll("details.log");
    for (var i = 0; i < logs.length; i++) {
      if (query.trim() && logs[i].querySelector("li.entry:not([hidden])") && !logs[i].open) {
        logs[i].open = true;
      }
    }
    var output = content.querySelector(".log-search output");
    if (output) {
      output.textContent = !query.trim() ? "" : shown === 0 ? MATCHES.none : shown === 1 ? MATCHES.one : shown + MATCHES.many;
    }
  }

  content.addEventListener("input", function (event) {
    if (event.target && event.target.id === "log-search") {
      query = event.target.value;
      search();
    }
  });
  document.addEventListener("focusin", function (event) {
    searchFocused = !!(event.target && event.target.id === "log-search");
  });

  // -- follow ---------------------------------------------------------------------------

  function list(attempt) {
    return content.querySelector('ol.transcript[data-attempt="' + attempt + '"]');
  }

  function atBottom() {
    return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 40;
  }

  function stop() {
    if (source !== null) {
      source.close();
      source = null;
    }
    followed = null;
    body.removeAttribute("data-following");
  }

  function onLog(event) {
    var data;
    try {
      data = JSON.parse(event.data);
    } catch (err) {
      return;
    }
    var target = list(data.attempt);
    if (!target || data.seq <= Number(target.getAttribute("data-after") || 0)) {
      return;
    }
    var follow = atBottom();
    var before = target.children.length;
    target.insertAdjacentHTML("beforeend", data.html);
    target.setAttribute("data-after", String(data.seq));
    if (query.trim()) {
      filter(Array.prototype.slice.call(target.children, before));
    }
    appended += 1;
    body.setAttribute("data-log-events", String(appended));
    if (follow && target.lastElementChild) {
      target.lastElementChild.scrollIntoView({ block: "end" });
    }
  }

  function follow(target) {
    var attempt = target.getAttribute("data-attempt");
    if (followed === attempt) {
      return;
    }
    stop();
    if (!window.EventSource) {
      return;
    }
    var url = new URL(target.getAttribute("data-stream"), window.location.href);
    url.searchParams.set("attempt", attempt);
    url.searchParams.set("after", target.getAttribute("data-after") || "0");
    source = new EventSource(url.toString());
    followed = attempt;
    source.addEventListener("open", function () {
      body.setAttribute("data-following", attempt);
    });
    source.addEventListener("log", onLog);
    source.addEventListener("end", stop);
  }

  function attach() {
    var box = content.querySelector(".log-search");
    if (box) {
      box.hidden = false;
      var input = box.querySelector("input");
      if (input && input.value !== query) {
        input.value = query;
      }
      if (input && searchFocused && document.activeElement !== input) {
        input.focus();
        input.setSelectionRange(input.value.length, input.value.length);
      }
      if (query.trim()) {
        search();
      }
    }
    var target = content.querySelector("ol.transcript[data-follow]");
    if (target) {
      follow(target);
    }
    // else: a stream still open carries on until its `end` (the worker's last lines)
  }

  new MutationObserver(function (mutations) {
    for (var i = 0; i < mutations.length; i++) {
      if (mutations[i].target === content) {
        attach();
        return;
      }
    }
  }).observe(content, { childList: true });
  attach();
})();
