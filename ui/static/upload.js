// Streams the chosen file straight from the browser's disk to POST /api/uploads (no copy held
// in memory on either side), showing progress, and reports the staged upload back to Python as
// the component state `upload` ({upload_id, filename, size_bytes}).
export default function ({ data, parentElement, setStateValue }) {
  const root = parentElement;
  const input = root.querySelector("input[type=file]");
  const status = root.querySelector(".status");
  const bar = root.querySelector("progress");
  const cancel = root.querySelector("button.cancel");
  const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;
  const show = (text, kind) => {
    status.textContent = text;
    status.dataset.kind = kind;
  };
  input.accept = data.accept;
  input.setAttribute("aria-label", data.label);
  root.querySelector(".pick span").textContent = data.label;
  if (!status.textContent) show(`Up to ${data.limit}; streamed to the server, never held in memory.`, "hint");

  input.onchange = () => {
    const file = input.files[0];
    if (!file) return;
    if (file.size > data.max_bytes) {
      show(`${file.name} is ${mb(file.size)}, over the ${data.limit} limit ($${data.limit_env}).`, "error");
      return;
    }
    root.xhr?.abort();
    const xhr = (root.xhr = new XMLHttpRequest());
    xhr.open("POST", `${data.url}?filename=${encodeURIComponent(file.name)}`);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    if (data.ticket) xhr.setRequestHeader("X-Upload-Ticket", data.ticket);
    xhr.upload.onprogress = (e) => {
      bar.max = e.total || file.size;
      bar.value = e.loaded;
      show(`Uploading ${file.name}: ${mb(e.loaded)} of ${mb(e.total || file.size)}`, "busy");
    };
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON: reported by status below */ }
      if (xhr.status === 201) {
        bar.value = bar.max;
        show(`✓ ${body.filename} · ${mb(body.size_bytes)} on the server`, "done");
        setStateValue("upload", body);
      } else {
        show(body.error?.message || `Upload failed (HTTP ${xhr.status}).`, "error");
      }
      cancel.hidden = true;
    };
    xhr.onerror = () => { show("Upload failed: the server could not be reached.", "error"); cancel.hidden = true; };
    xhr.onabort = () => { show("Upload cancelled.", "hint"); cancel.hidden = true; };
    cancel.hidden = false;
    bar.value = 0;
    show(`Uploading ${file.name}…`, "busy");
    xhr.send(file);
  };
  cancel.onclick = () => root.xhr?.abort();
}
