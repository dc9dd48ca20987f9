# Bash completion for the lmx command: subcommands, their options (read from `lmx SUB --help`,
# so always current), setting names, and held keys for release/info.
#   source scripts/lmx-completion.bash
_lmx() {
  local cur=${COMP_WORDS[COMP_CWORD]} sub="" i
  for ((i = 1; i < COMP_CWORD; i++)); do
    [[ ${COMP_WORDS[i]} == -* ]] || { sub=${COMP_WORDS[i]}; break; }
  done
  if [[ -z $sub ]]; then
    COMPREPLY=($(compgen -W "broker start acquire release run ls info stats ping set get unset check --help --version" -- "$cur"))
    return
  fi
  local w
  for w in "${COMP_WORDS[@]:1:COMP_CWORD-1}"; do
    [[ $w == -- && $sub == run ]] && { COMPREPLY=($(compgen -c -- "$cur")); return; }
  done
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$("${COMP_WORDS[0]}" "$sub" --help 2>/dev/null | grep -oE -- '--?[a-zA-Z][a-zA-Z-]*' | sort -u)" -- "$cur"))
    return
  fi
  case $sub in
    set | get | unset) COMPREPLY=($(compgen -W "url uds_path host port" -- "$cur")) ;;
    release | info) COMPREPLY=($(compgen -W "$("${COMP_WORDS[0]}" ls --json 2>/dev/null | grep -oE '"key":"[^"]*"' | cut -d'"' -f4)" -- "$cur")) ;;
  esac
}
complete -F _lmx lmx
