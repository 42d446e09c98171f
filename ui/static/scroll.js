// Brings the element matching data.selector to the top of the window once per data.token: the
// Export page calls it when an export starts, so its progress is where the user is looking.
// (parentElement is the component's shadow root: the token is kept as a property on it.)
export default function ({ data, parentElement }) {
  if (!data?.token || parentElement.aistudioToken === data.token) return;
  parentElement.aistudioToken = data.token;
  requestAnimationFrame(() => {
    const target = document.querySelector(data.selector);
    if (!target) return;
    target.style.scrollMarginTop = "4.5rem"; // below the top bar
    target.scrollIntoView({ block: "start" });
  });
}
