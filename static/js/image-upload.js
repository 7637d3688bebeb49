// The image upload page: create the image (the form without its file), then PUT the File object itself
// as the request body. The browser streams it from disk, so a multi-GB image is never read into memory,
// and xhr.upload.onprogress drives the progress bar. Without JavaScript the form posts the file itself.
(function () {
  "use strict";

  const MB = 1e6;

  function part(form, name) {
    return form.querySelector("[data-upload-" + name + "]");
  }

  function showError(form, body) {
    const error = part(form, "error");
    error.textContent = "ERROR: " + (body.code || "ImageUploadFailed") + ": " + (body.message || "the upload failed.");
    error.hidden = false;
    part(form, "state").textContent = "";
    const hint = part(form, "hint");
    hint.textContent = body.hint || "";
    hint.hidden = !body.hint;
    part(form, "submit").disabled = false;
  }

  function megabytes(bytes) {
    return (bytes / MB).toFixed(1) + " MB";
  }

  function put(form, file, created) {
    const progress = part(form, "progress");
    const bar = progress.querySelector("progress");
    const percent = part(form, "percent");
    const rate = part(form, "rate");
    const xhr = new XMLHttpRequest();
    const started = performance.now();
    progress.hidden = false;
    xhr.open("PUT", created.upload_url);
    xhr.setRequestHeader("X-CSRFToken", form.querySelector("[name=csrfmiddlewaretoken]").value);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = function (event) {
      const total = event.lengthComputable ? event.total : file.size;
      const done = total ? event.loaded / total : 0;
      const seconds = (performance.now() - started) / 1000;
      bar.value = done * 100;
      percent.textContent = Math.floor(done * 100) + "%";
      rate.textContent = megabytes(event.loaded) + " of " + megabytes(total) +
        (seconds > 0 ? " · " + (event.loaded / MB / seconds).toFixed(1) + " MB/s" : "");
    };
    xhr.upload.onload = function () {
      bar.value = 100;
      percent.textContent = "100%";
      part(form, "state").textContent = "Uploaded; checking the file's header, converting and storing it…";
    };
    xhr.onload = function () {
      let body = {};
      try {
        body = JSON.parse(xhr.responseText);
      } catch (ignored) {
        body = { code: "ImageUploadFailed", message: "the server answered HTTP " + xhr.status + "." };
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        window.location.assign(body.detail_url || created.detail_url);
      } else {
        progress.hidden = true;
        showError(form, body);
      }
    };
    xhr.onerror = function () {
      progress.hidden = true;
      showError(form, {
        code: "ImageUploadFailed",
        message: "the connection broke off during the upload; delete image " + created.name +
          " on its page and upload the file again.",
      });
    };
    xhr.send(file);
  }

  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (!form.matches("form[data-image-upload]")) {
      return;
    }
    const file = form.querySelector("input[type=file][name=file]").files[0];
    if (!file) {
      return; // the server answers what is missing
    }
    event.preventDefault();
    part(form, "error").hidden = true;
    part(form, "hint").hidden = true;
    part(form, "submit").disabled = true;
    part(form, "state").textContent = "Uploading " + file.name + "…";
    const data = new FormData(form);
    data.delete("file");
    data.set("size_bytes", String(file.size));
    fetch(form.action, {
      method: "POST",
      body: data,
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (response) {
        return response.json().then(function (body) {
          return { ok: response.ok, body: body };
        });
      })
      .then(function (answer) {
        if (answer.ok) {
          put(form, file, answer.body);
        } else {
          showError(form, answer.body);
        }
      })
      .catch(function () {
        showError(form, { code: "ImageUploadFailed", message: "the console could not be reached; try again." });
      });
  });
})();
