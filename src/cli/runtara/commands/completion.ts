import type { Command } from "commander";
import { UsageError } from "../failures.js";

/**
 * `runtara completion bash|zsh`: a completion script generated from the command tree, so it
 * stays in step with the commands (zsh loads it through bashcompinit).
 */
export function registerCompletion(program: Command): void {
  program
    .command("completion <shell>")
    .description("print a shell completion script: bash, or zsh; e.g. source <(runtara completion bash)")
    .action((shell: string) => {
      if (shell !== "bash" && shell !== "zsh") throw new UsageError(`completion: shell must be bash or zsh, got ${JSON.stringify(shell)}`);
      process.stdout.write(script(program, shell));
    });
}

function script(program: Command, shell: "bash" | "zsh"): string {
  const globals = program.options.map((o) => o.long!).join(" ");
  const cases = program.commands
    .map((c) => {
      const words = [...c.commands.map((s) => s.name()), ...c.options.map((o) => o.long!)].join(" ");
      return `      ${c.name()}) words="${words} ${globals}" ;;`;
    })
    .join("\n");
  return `${shell === "zsh" ? "autoload -U +X bashcompinit && bashcompinit\n" : ""}_runtara() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" words
  if [ "$COMP_CWORD" -eq 1 ]; then
    words="${program.commands.map((c) => c.name()).join(" ")} ${globals} --help"
  else
    case "\${COMP_WORDS[1]}" in
${cases}
      *) words="${globals}" ;;
    esac
  fi
  COMPREPLY=( $(compgen -W "$words" -- "$cur") )
}
complete -o default -F _runtara runtara
`;
}
