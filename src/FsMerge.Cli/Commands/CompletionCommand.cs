namespace FsMerge.Cli.Commands;

/// <summary>
/// `fsmerge completion bash`: a completion script for the shell. It hands the line being typed to fsmerge's own
/// parser (System.CommandLine's [suggest:POSITION] directive), so completions follow the option definitions.
/// </summary>
sealed class CompletionCommand : ICommand
{
    public string Name => "completion";
    public string Summary => "print a shell completion script: eval \"$(fsmerge completion bash)\" (zsh: run 'autoload bashcompinit && bashcompinit' first)";
    public string Usage => "completion bash";
    public IReadOnlyList<ArgumentSpec> Arguments => [new("shell", "bash", "the shell", ["bash"])];
    public IReadOnlyList<OptionSpec> Options => [];

    public int Run(ParsedArgs args)
    {
        if (args.Get("shell") is null) throw new FsMergeException("fsmerge completion: name the shell: 'fsmerge completion bash'");
        Console.Write("""
            # fsmerge completion for bash (and zsh through bashcompinit): eval "$(fsmerge completion bash)"
            _fsmerge_complete() {
              local IFS=$'\n'
              local words
              words="$("${COMP_WORDS[0]}" "[suggest:${COMP_POINT}]" "${COMP_LINE}" 2>/dev/null)"
              COMPREPLY=($(compgen -W "$words" -- "${COMP_WORDS[COMP_CWORD]}"))
            }
            complete -o default -F _fsmerge_complete fsmerge ./fsmerge

            """);
        return 0;
    }
}
