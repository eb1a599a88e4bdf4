// Reads a JSON array of {rule, self} on stdin; prints a JSON array with, per item, true/false (the rule's
// value) or an error string (a rule the evaluator cannot run is an error, never a pass).
// CEL by @marcbachmann/cel-js, plus the Kubernetes CEL library functions the vendored CRDs use that are not
// in the CEL standard: string.find(regex) (k8s.io/apiserver/pkg/cel/library/regex.go: the first match, or
// "" when none).
import fs from "node:fs";
import { Environment } from "@marcbachmann/cel-js";

const env = new Environment({ unlistedVariablesAreDyn: true })
  .registerFunction("string.find(string): string", (text, regex) => {
    const match = text.match(new RegExp(regex));
    return match ? match[0] : "";
  });

const items = JSON.parse(fs.readFileSync(0, "utf8"));
process.stdout.write(JSON.stringify(items.map(({ rule, self }) => {
  try {
    const value = env.evaluate(rule, { self });
    return typeof value === "boolean" ? value : `rule ${rule} gave ${typeof value}, not a bool`;
  } catch (err) {
    return `rule ${rule}: ${err.message.split("\n")[0]}`;
  }
})));
