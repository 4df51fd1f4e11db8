/// What Argu leaves to each command, done once for all of them before Argu parses: numeric
/// option values against the range declared on the option ([<AtLeast>], [<Above>]), file
/// arguments that name a directory ([<FilePath>]), misspelt options and commands (with a
/// suggestion), and positionals in any order around the options.
module Dsl.Cli.CommandLine

open System
open System.Globalization
open System.IO
open Argu
open Dsl.Cli.Args
open Dsl.Cli.Report

let private number (s: string) =
    match Double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture) with
    | true, v -> Some v
    | _ -> None

let private attribute<'a when 'a :> Attribute> (case: ArgumentCaseInfo) =
    case.UnionCaseInfo.GetCustomAttributes typeof<'a>
    |> Array.tryHead
    |> Option.map (fun a -> a :?> 'a)

/// The range an option declares, checked on a value that parses as a number (Argu reports one
/// that does not). Floats must also be finite.
let private checkRange (command: string) (flag: string) (case: ArgumentCaseInfo) (fieldType: Type) (value: string) =
    let integral = fieldType = typeof<int> || fieldType = typeof<int64>

    let kind = if integral then "a whole number" else "a finite number"

    let bound (x: float) =
        if integral then
            sprintf "%d" (int64 x)
        else
            x.ToString(CultureInfo.InvariantCulture)

    let rule =
        match attribute<AtLeastAttribute> case, attribute<AboveAttribute> case with
        | Some a, _ -> Some((fun v -> v >= a.Least), sprintf "≥ %s" (bound a.Least))
        | _, Some a -> Some((fun v -> v > a.Bound), sprintf "> %s" (bound a.Bound))
        | None, None -> None

    match rule, number value with
    | Some(ok, range), Some v when not (ok v) || Double.IsInfinity v ->
        raise (UsageError(sprintf "%s: %s must be %s %s, got %s" command flag kind range value))
    | _ -> ()

let private checkAmount (command: string) (flag: string) (case: ArgumentCaseInfo) (value: string) =
    if (attribute<AmountAttribute> case).IsSome && (parseAmount value).IsNone then
        raise (UsageError(sprintf "%s: %s takes %s, got '%s'" command flag amountRule value))

let private checkFile (case: ArgumentCaseInfo) (position: int) (value: string) =
    match attribute<FilePathAttribute> case with
    | Some a when (a.Position < 0 || a.Position = position) && Directory.Exists value ->
        raise (UserError(sprintf "%s: error: is a directory, not a file" value))
    | _ -> ()

/// Checks one command's arguments and returns them with its positionals after its options
/// (where Argu gathers a list of them: given on both sides of an option, Argu kept only the
/// last run); a subcommand's arguments are checked by its own parser.
let rec private walk (command: string) (parser: ArgumentParser) (tokens: string list) : string list =
    let cases = parser.GetArgumentCases()

    let named =
        dict
            [
                for c in cases do
                    for n in c.CommandLineNames.Value -> n, c
            ]

    let helps = set parser.HelpFlags
    let main = cases |> List.tryFind (fun c -> c.IsMainCommand)

    let subcommands =
        cases |> List.filter (fun c -> c.ArgumentType = ArgumentType.SubCommand)

    let options = ResizeArray<string>()
    let positionals = ResizeArray<string>()

    let rec loop tokens =
        match tokens with
        | [] ->
            // Argu reads the words after an option whose value is a list as its items, so the
            // file goes first when one is present (`dsl run F --force A B`); otherwise last, as a
            // main command that is itself a list of paths needs.
            let listOption =
                options
                |> Seq.exists (fun o -> named.ContainsKey o && named[o].ArgumentType = ArgumentType.List)

            if
                listOption
                && main |> Option.exists (fun m -> m.ArgumentType = ArgumentType.Primitive)
            then
                List.ofSeq positionals @ List.ofSeq options
            else
                List.ofSeq options @ List.ofSeq positionals
        | (t: string) :: rest when helps.Contains t ->
            options.Add t
            loop rest
        | t :: rest when named.ContainsKey t && named[t].ArgumentType = ArgumentType.SubCommand ->
            let sub =
                parser.GetSubCommandParsers()
                |> List.find (fun p -> p.ParentInfo |> Option.exists (fun i -> i.Name = named[t].Name))

            List.ofSeq options
            @ List.ofSeq positionals
            @ t :: walk (command + " " + t) sub rest
        | t :: rest when named.ContainsKey t ->
            let case = named[t]
            let fields = case.UnionCaseInfo.GetFields()

            let values =
                match case.ArgumentType with
                | ArgumentType.Primitive -> List.truncate fields.Length rest
                // `--force A B`: a list option takes the words up to the next option (Argu does the
                // same); kept with its option, so the file after it is not taken as one of them.
                | ArgumentType.List -> rest |> List.takeWhile (fun v -> not (v.StartsWith "-") || (number v).IsSome)
                | _ -> []

            if case.ArgumentType = ArgumentType.Primitive then
                values
                |> List.iteri (fun i v ->
                    checkRange command t case fields[i].PropertyType v
                    checkAmount command t case v
                    checkFile case i v)

            options.Add t
            options.AddRange values
            loop (List.skip values.Length rest)
        | t :: _ when t.StartsWith "-" && t.Length > 1 && (number t).IsNone ->
            let flags = Seq.append named.Keys helps |> Seq.filter (fun n -> n.StartsWith "-")

            let hint =
                match Dsl.Diagnostics.suggest t flags with
                | Some f -> sprintf "; did you mean %s?" f
                | None -> sprintf "; see '%s --help'" command

            raise (UsageError(sprintf "%s: unknown option %s%s" command t hint))
        | t :: rest ->
            match main with
            | Some m ->
                checkFile m positionals.Count t
                positionals.Add t
                loop rest
            | None when not subcommands.IsEmpty ->
                let names = subcommands |> List.collect (fun c -> c.CommandLineNames.Value)

                let hint =
                    match Dsl.Diagnostics.suggest t names with
                    | Some n -> sprintf "; did you mean '%s'?" n
                    | None -> sprintf "; there are: %s" (String.concat ", " names)

                raise (UsageError(sprintf "%s: unknown command '%s'%s" command t hint))
            | None ->
                // Argu reports the stray argument.
                positionals.Add t
                loop rest

    loop tokens

/// The command line to hand Argu, after every check above.
let prepare (parser: ArgumentParser<DslArgs>) (argv: string[]) : string[] =
    walk "dsl" parser (List.ofArray argv) |> Array.ofList
