/** The web console's entry: esbuild bundles this (and styles.css) into dist/console for /ui. */
import { render } from "preact";
import { App } from "./app.js";
import "./styles.css";

render(<App />, document.getElementById("app")!);
