// patchwright dashboard: keep the page live.
// Subscribes to /api/events (server-sent events). When a task changes, the page's <main>
// content is fetched again as a server-rendered fragment (?fragment=1) and swapped in, so
// all escaping stays on the server. <body data-live="1"> once the stream has connected;
// data-events counts the task events received.
(function () {
  "use strict";
  var body = document.body;
  var content = document.getElementById("content");
  var indicator = document.getElementById("live");
  if (!content || !window.EventSource || !window.fetch) {
    return;
  }
  var onlyTask = body.getAttribute("data-task-id");
  var timer = null;
  var received = 0;

  function show(text, state) {
    if (indicator) {
      indicator.textContent = text;
      indicator.className = "live " + state;
    }
  }

  function refresh() {
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    url.hash = "";
    fetch(url.toString(), { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        if (editing()) {
          held = true; // swapped in once the typing is sent or undone (see below)
          return;
        }
        held = false;
        content.innerHTML = html;
        body.setAttribute("data-refreshed", String(Number(body.getAttribute("data-refreshed") || 0) + 1));
      })
      .catch(function () {
        show("refresh failed", "off");
      });
  }

  // An action form's text the user has typed is never swapped away by a refresh.
  var held = false;
  function editing() {
    var fields = content.querySelectorAll("textarea, input[type=checkbox]");
    for (var i = 0; i < fields.length; i += 1) {
      var field = fields[i];
      if (field.type === "checkbox" ? field.checked !== field.defaultChecked : field.value !== field.defaultValue) {
        return true;
      }
    }
    return false;
  }
  content.addEventListener("input", function () {
    if (held && !editing()) {
      soon();
    }
  });

  function soon() {
    if (timer === null) {
      timer = window.setTimeout(function () {
        timer = null;
        refresh();
      }, 200);
    }
  }

  var source = new EventSource("/api/events");
  source.addEventListener("open", function () {
    body.setAttribute("data-live", "1");
    show("live", "on");
    soon(); // catch up with anything that changed while not connected
  });
  source.addEventListener("error", function () {
    show("reconnecting…", "off");
  });
  source.addEventListener("task", function (event) {
    var task;
    try {
      task = JSON.parse(event.data);
    } catch (err) {
      return;
    }
    received += 1;
    body.setAttribute("data-events", String(received));
    if (onlyTask && task.id !== onlyTask) {
      return;
    }
    soon();
  });
})();
