package gate

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/ext"
	"cel.dev/cel-go/interpreter"
	"cel.dev/cel-go/parser"
)

// CostLimit bounds one evaluation of a policy, in CEL's runtime cost units: about one unit per
// variable or field read, comparison, or list element visited; string operations cost by length.
//
// Realistic policies cost about 100,000 per pass over 10,000 vulnerabilities:
// !scan.vulnerabilities.exists(v, v.severity == "Critical" && v.fixable) about 70,000, the same
// with a lookup of each id in a constant allow list of 50 ids about 85,000 (a constant list is
// looked up as a set), scan.vulnerabilities.map(v, v.id).join(",") about 300,000. The limit
// leaves room for dozens of such passes, and stops a comprehension nested in another over the
// same list (100 million pairs) after about 700,000 pairs, in about half a second on a small
// machine. Mind the functions whose cost grows faster than their list: distinct() costs the
// square of the list's length, and so fits lists of up to about 2,000 items only.
//
// The top-level conjuncts of a policy are evaluated one by one (see Evaluate) and share the one
// budget: the evaluation stops with an error once their costs add up to more than CostLimit
// (each conjunct is stopped at CostLimit, so the total stays under twice CostLimit).
const CostLimit = 5_000_000

// MaxSourceLen is the longest policy accepted, in bytes.
const MaxSourceLen = 16 << 10

// maxNesting bounds the nesting of a policy's expressions (the CEL parser's recursion limit):
// parentheses, brackets, calls and selections each count, and so does each operator of a chain
// of + or ==, but not of && or ||.
const maxNesting = 32

// interruptEvery is how many comprehension iterations run between checks of the context.
const interruptEvery = 100

// Policy is a compiled, type-checked gate policy. It is safe for concurrent use.
type Policy struct {
	source    string
	conjuncts []conjunct
	checks    []string
}

// A conjunct is one operand of the policy's outermost chain of && (or the whole policy when it
// is not a conjunction), compiled on its own.
type conjunct struct {
	text string
	prg  cel.Program
}

// CompileError lists what is wrong with a policy, each with its position (line and column,
// 1-based; columns count characters). An issue that CEL reports without a position is placed
// at 1:1.
type CompileError struct{ Issues []Issue }

// Issue is one problem of a policy, at Line and Column (1-based).
type Issue struct {
	Line, Column int
	Message      string
}

// Error reads, for example,
//
//	policy: 1:8: undeclared reference to 'scn' (did you mean 'scan'?)
//
// with the issues joined by "; ".
func (e *CompileError) Error() string {
	parts := make([]string, len(e.Issues))
	for i, is := range e.Issues {
		parts[i] = fmt.Sprintf("%d:%d: %s", is.Line, is.Column, is.Message)
	}
	return "policy: " + strings.Join(parts, "; ")
}

// policyEnv is the CEL environment every policy is compiled in. Its variables are tag, manifest,
// scan, signatures, attestations, checks and base; their fields are documented on Input and the
// types it holds (Manifest, Platform, Scan, Severities, Vulnerability, Signature, Attestation,
// Base), whose cel struct tags give the snake_case field names. Field reads are type-checked at
// compile time. The environment has CEL's standard library (timestamp and duration included)
// and the strings, lists and sets extensions, and no function whose result depends on anything
// but the input (there is no now()).
var policyEnv = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(
		ext.NativeTypes(
			reflect.TypeFor[Manifest](), reflect.TypeFor[Platform](),
			reflect.TypeFor[Scan](), reflect.TypeFor[Severities](), reflect.TypeFor[Vulnerability](),
			reflect.TypeFor[Signature](), reflect.TypeFor[Attestation](), reflect.TypeFor[Base](),
			ext.ParseStructTags(true),
		),
		cel.Variable("tag", cel.StringType),
		cel.Variable("manifest", cel.ObjectType("gate.Manifest")),
		cel.Variable("scan", cel.ObjectType("gate.Scan")),
		cel.Variable("signatures", cel.ListType(cel.ObjectType("gate.Signature"))),
		cel.Variable("attestations", cel.ListType(cel.ObjectType("gate.Attestation"))),
		cel.Variable("checks", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("base", cel.ObjectType("gate.Base")),
		ext.Strings(),
		ext.Lists(),
		ext.Sets(),
		cel.ASTValidators(literalValidator{}),
		cel.EnableMacroCallTracking(),
		cel.ParserRecursionLimit(maxNesting),
		cel.ParserExpressionSizeLimit(MaxSourceLen),
		cel.DefaultUTCTimeZone(true),
	)
})

// Compile parses and type-checks a policy expression. The result type must be bool. An empty
// expression (or one of white space only) is the policy "true". Errors are *CompileError.
func Compile(expr string) (*Policy, error) {
	env, err := policyEnv()
	if err != nil {
		return nil, fmt.Errorf("policy: CEL environment: %w", err)
	}
	p := &Policy{source: expr}
	if len(expr) > MaxSourceLen {
		line, col := position(expr, MaxSourceLen)
		return nil, &CompileError{Issues: []Issue{{Line: line, Column: col, Message: fmt.Sprintf(
			"policy is %d bytes long, more than the %d allowed", len(expr), MaxSourceLen)}}}
	}
	if !utf8.ValidString(expr) {
		line, col := position(expr, invalidUTF8At(expr))
		return nil, &CompileError{Issues: []Issue{{Line: line, Column: col, Message: "invalid UTF-8"}}}
	}
	if strings.TrimSpace(expr) == "" {
		expr = "true"
	}

	parsed, iss := env.Parse(expr)
	if iss.Err() != nil {
		return nil, issuesError(iss)
	}
	// Split before checking: the parse tree is the one the source offsets describe.
	texts := conjunctTexts(env, expr, parsed.NativeRep())
	p.checks = constantChecks(parsed.NativeRep().Expr())

	checked, iss := env.Check(parsed)
	if iss.Err() != nil {
		return nil, issuesError(iss)
	}
	if t := checked.OutputType(); !t.IsExactType(cel.BoolType) {
		line, col := position(expr, exprStart(expr))
		return nil, &CompileError{Issues: []Issue{{Line: line, Column: col, Message: fmt.Sprintf(
			"a policy must be a bool expression, this one is of type %s", t)}}}
	}

	if len(texts) > 1 {
		for _, text := range texts {
			a, iss := env.Compile(text)
			if iss.Err() != nil {
				// Cannot happen (an operand of a checked && checks on its own); should it,
				// the policy is evaluated as one part.
				p.conjuncts = nil
				break
			}
			prg, err := program(env, a)
			if err != nil {
				return nil, err
			}
			p.conjuncts = append(p.conjuncts, conjunct{text: text, prg: prg})
		}
	}
	if p.conjuncts == nil {
		prg, err := program(env, checked)
		if err != nil {
			return nil, err
		}
		p.conjuncts = []conjunct{{text: strings.TrimSpace(expr), prg: prg}}
	}
	return p, nil
}

// program plans a checked policy (or conjunct) for evaluation.
func program(env *cel.Env, a *cel.Ast) (cel.Program, error) {
	prg, err := env.Program(a,
		cel.CostLimit(CostLimit),
		cel.InterruptCheckFrequency(interruptEvery),
		cel.EvalOptions(cel.OptOptimize), // constant lists as sets, regular expressions compiled once
	)
	if err != nil {
		return nil, &CompileError{Issues: []Issue{{Line: 1, Column: 1, Message: err.Error()}}}
	}
	return prg, nil
}

// Source is the policy as given to Compile.
func (p *Policy) Source() string { return p.source }

// Checks are the check names the policy reads with a constant key: checks["e2e"], checks.e2e,
// "e2e" in checks (sorted, unique). The gate waits for each of them before it decides.
func (p *Policy) Checks() []string { return slices.Clone(p.checks) }

// Result is the outcome of one evaluation of a policy.
type Result struct {
	Pass bool
	// Failed lists the parts of the policy that were false: the source text of each top-level
	// conjunct (the operands of the outermost chain of &&) that evaluated to false (or to an
	// error), in order; for a policy that is not a conjunction, the whole expression. Empty when
	// Pass.
	Failed []string
	// Err is an evaluation error (a missing map key, a type error at run time, the cost limit
	// exceeded); Pass is false then and Failed names the part that failed.
	Err error
}

// Evaluate runs the policy on a candidate's input. Checks named by Checks() but absent from
// in.Checks are seen as "missing" (so `checks["e2e"] == "pass"` is false, not an error).
//
// Each top-level conjunct is evaluated, in order, so that Failed lists every one that is false.
// Pass is what CEL gives for the whole expression: true only when every conjunct is true. A
// conjunct that fails with an error is listed in Failed too, and the conjuncts after it are still
// evaluated, unless the error is the cost limit or ctx being done, which end the evaluation. Err
// is the error that ended the evaluation, else the first one.
func (p *Policy) Evaluate(ctx context.Context, in Input) Result {
	checks := in.Checks
	copied := false
	for _, name := range p.checks {
		if _, ok := checks[name]; ok {
			continue
		}
		if !copied { // never write the caller's map
			checks = make(map[string]string, len(in.Checks)+len(p.checks))
			maps.Copy(checks, in.Checks)
			copied = true
		}
		checks[name] = "missing"
	}
	vars := map[string]any{
		"tag":          in.Tag,
		"manifest":     in.Manifest,
		"scan":         in.Scan,
		"signatures":   in.Signatures,
		"attestations": in.Attestations,
		"checks":       checks,
		"base":         in.Base,
	}
	var res Result
	var spent uint64
	for _, c := range p.conjuncts {
		if err := ctx.Err(); err != nil {
			res.Failed = append(res.Failed, c.text)
			res.Err = fmt.Errorf("policy: evaluation stopped: %w", context.Cause(ctx))
			break
		}
		out, det, err := c.prg.ContextEval(ctx, vars)
		if det != nil && det.ActualCost() != nil {
			spent += *det.ActualCost()
		}
		if err == nil && spent > CostLimit {
			err = errCostLimit
		}
		if err != nil {
			res.Failed = append(res.Failed, c.text)
			stop := errors.Is(err, errCostLimit) || isCancelled(err)
			if res.Err == nil || stop {
				res.Err = evalError(err)
			}
			if stop {
				break
			}
			continue
		}
		switch out {
		case types.True:
		case types.False:
			res.Failed = append(res.Failed, c.text)
		default:
			res.Failed = append(res.Failed, c.text)
			if res.Err == nil {
				res.Err = fmt.Errorf("policy: %s is %v (%s), not a bool", c.text, out, out.Type())
			}
		}
	}
	res.Pass = len(res.Failed) == 0 && res.Err == nil
	return res
}

// errCostLimit is the error of an evaluation whose conjuncts together cost more than CostLimit.
var errCostLimit = fmt.Errorf("evaluation cost over the limit of %d", CostLimit)

// isCancelled reports whether err ended an evaluation early: the cost limit or the context.
func isCancelled(err error) bool {
	var ce interpreter.EvalCancelledError
	return errors.As(err, &ce) || errors.Is(err, interpreter.InterruptError{})
}

// evalError words an evaluation error for Result.Err.
func evalError(err error) error {
	var ce interpreter.EvalCancelledError
	if errors.As(err, &ce) && ce.Cause == interpreter.CostLimitExceeded {
		return fmt.Errorf("policy: %w (%w)", errCostLimit, err)
	}
	return fmt.Errorf("policy: %w", err)
}

// literalValidator reports, with its position and the reason, a constant argument of
// timestamp(), duration() or matches() that is invalid. (CEL's own validators give the
// position only; without a validator, the error comes when the program is planned, with
// neither.) The parsers are the ones CEL uses at run time.
type literalValidator struct{}

func (literalValidator) Name() string { return "gate.literals" }

func (literalValidator) Validate(_ *cel.Env, _ cel.ValidatorConfig, a *ast.AST, iss *cel.Issues) {
	for _, e := range ast.MatchDescendants(ast.NavigateAST(a), ast.KindMatcher(ast.CallKind)) {
		call := e.AsCall()
		args := call.Args()
		if len(args) == 0 || args[len(args)-1].Kind() != ast.LiteralKind {
			continue
		}
		arg := args[len(args)-1]
		lit, ok := arg.AsLiteral().(types.String)
		if !ok {
			continue
		}
		var err error
		switch name := call.FunctionName(); {
		case name == "timestamp" && len(args) == 1 && !call.IsMemberFunction():
			_, err = time.Parse(time.RFC3339, string(lit))
		case name == "duration" && len(args) == 1 && !call.IsMemberFunction():
			_, err = time.ParseDuration(string(lit))
		case name == "matches":
			_, err = regexp.Compile(string(lit))
		}
		if err != nil {
			iss.ReportErrorAtID(arg.ID(), "invalid %s argument: %v", call.FunctionName(), err)
		}
	}
}

// issuesError converts CEL's issues to a *CompileError.
func issuesError(iss *cel.Issues) error {
	ce := &CompileError{}
	for _, e := range iss.Errors() {
		line, col := e.Location.Line(), e.Location.Column()+1
		if line < 1 || col < 1 {
			line, col = 1, 1
		}
		ce.Issues = append(ce.Issues, Issue{Line: line, Column: col, Message: e.Message})
	}
	if len(ce.Issues) == 0 {
		ce.Issues = []Issue{{Line: 1, Column: 1, Message: iss.Err().Error()}}
	}
	return ce
}

// conjunctTexts returns the source text of each top-level conjunct of the parsed policy: the
// operands of its outermost chain of && in order, or the whole expression when it is not a
// conjunction. The text is what the policy's author wrote, cut at the && operators, without
// the parentheses of a group that the cut opens or closes; where that does not give back the
// operand, the operand is printed from its syntax tree instead.
func conjunctTexts(env *cel.Env, src string, a *ast.AST) []string {
	info := a.SourceInfo()
	var leaves []ast.Expr
	var ops []int32 // offsets of the && operators between the leaves
	opsKnown := true
	var flatten func(e ast.Expr)
	flatten = func(e ast.Expr) {
		if e.Kind() == ast.CallKind && e.AsCall().FunctionName() == operators.LogicalAnd && !e.AsCall().IsMemberFunction() {
			if r, ok := info.GetOffsetRange(e.ID()); ok {
				ops = append(ops, r.Start)
			} else {
				opsKnown = false
			}
			for _, arg := range e.AsCall().Args() {
				flatten(arg)
			}
			return
		}
		leaves = append(leaves, e)
	}
	flatten(a.Expr())
	if len(leaves) == 1 {
		return []string{strings.TrimSpace(src)}
	}
	slices.Sort(ops)
	runes := []rune(src)
	if !opsKnown || len(ops) != len(leaves)-1 {
		ops = nil
	}
	texts := make([]string, len(leaves))
	for i, leaf := range leaves {
		want, err := parser.Unparse(leaf, info)
		if err != nil {
			want = ""
		}
		if ops != nil && want != "" {
			lo, hi := int32(0), int32(len(runes))
			if i > 0 {
				lo = ops[i-1] + int32(len("&&"))
			}
			if i < len(ops) {
				hi = ops[i]
			}
			if 0 <= lo && lo <= hi && int(hi) <= len(runes) {
				if text, ok := matchOperand(env, string(runes[lo:hi]), want); ok {
					texts[i] = text
					continue
				}
			}
		}
		if want == "" {
			// Unparse failed (it should not): the policy is then one part.
			return []string{strings.TrimSpace(src)}
		}
		texts[i] = want
	}
	return texts
}

// matchOperand trims the text between two && operators to the operand want (as printed by
// parser.Unparse): the text itself, or the text without the parentheses of a group that began
// before it or ends after it.
func matchOperand(env *cel.Env, text, want string) (string, bool) {
	text = strings.TrimSpace(text)
	for range 2 * maxNesting {
		if a, iss := env.Parse(text); iss.Err() == nil {
			if got, err := parser.Unparse(a.NativeRep().Expr(), a.NativeRep().SourceInfo()); err == nil && got == want {
				return text, true
			}
		}
		switch {
		case strings.HasPrefix(text, "(") && strings.Count(text, "(") > strings.Count(text, ")"):
			text = strings.TrimSpace(text[1:])
		case strings.HasSuffix(text, ")") && strings.Count(text, ")") > strings.Count(text, "("):
			text = strings.TrimSpace(text[:len(text)-1])
		default:
			return "", false
		}
	}
	return "", false
}

// constantChecks returns the check names e reads with a constant key, sorted and unique:
// checks["name"], checks.name, has(checks.name) and "name" in checks, where checks is the
// variable (not a comprehension variable of the same name).
func constantChecks(e ast.Expr) []string {
	var names []string
	var walk func(e ast.Expr, shadowed bool)
	isChecks := func(e ast.Expr, shadowed bool) bool {
		return !shadowed && e.Kind() == ast.IdentKind && e.AsIdent() == "checks"
	}
	constString := func(e ast.Expr) (string, bool) {
		if e.Kind() != ast.LiteralKind {
			return "", false
		}
		s, ok := e.AsLiteral().(types.String)
		return string(s), ok
	}
	walk = func(e ast.Expr, shadowed bool) {
		switch e.Kind() {
		case ast.CallKind:
			call := e.AsCall()
			args := call.Args()
			switch {
			case call.FunctionName() == operators.Index && len(args) == 2 && isChecks(args[0], shadowed):
				if s, ok := constString(args[1]); ok {
					names = append(names, s)
				}
			case call.FunctionName() == operators.In && len(args) == 2 && isChecks(args[1], shadowed):
				if s, ok := constString(args[0]); ok {
					names = append(names, s)
				}
			}
			if call.IsMemberFunction() {
				walk(call.Target(), shadowed)
			}
			for _, arg := range args {
				walk(arg, shadowed)
			}
		case ast.SelectKind:
			sel := e.AsSelect()
			if isChecks(sel.Operand(), shadowed) {
				names = append(names, sel.FieldName())
			}
			walk(sel.Operand(), shadowed)
		case ast.ListKind:
			for _, el := range e.AsList().Elements() {
				walk(el, shadowed)
			}
		case ast.MapKind:
			for _, en := range e.AsMap().Entries() {
				walk(en.AsMapEntry().Key(), shadowed)
				walk(en.AsMapEntry().Value(), shadowed)
			}
		case ast.StructKind:
			for _, f := range e.AsStruct().Fields() {
				walk(f.AsStructField().Value(), shadowed)
			}
		case ast.ComprehensionKind:
			comp := e.AsComprehension()
			walk(comp.IterRange(), shadowed)
			walk(comp.AccuInit(), shadowed)
			inner := shadowed || comp.IterVar() == "checks" || comp.AccuVar() == "checks" ||
				(comp.HasIterVar2() && comp.IterVar2() == "checks")
			walk(comp.LoopCondition(), inner)
			walk(comp.LoopStep(), inner)
			walk(comp.Result(), inner)
		}
	}
	walk(e, false)
	slices.Sort(names)
	return slices.Compact(names)
}

// position is the line and column (1-based, in characters) of byte offset off in s.
func position(s string, off int) (line, col int) {
	line, col = 1, 1
	for i, r := range s {
		if i >= off {
			break
		}
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return line, col
}

// exprStart is the byte offset of the first character of the expression in src: the first
// that is neither white space nor part of a // comment.
func exprStart(src string) int {
	for i := 0; i < len(src); {
		switch {
		case strings.HasPrefix(src[i:], "//"):
			nl := strings.IndexByte(src[i:], '\n')
			if nl < 0 {
				return len(src)
			}
			i += nl + 1
		case strings.ContainsRune(" \t\r\n\f", rune(src[i])):
			i++
		default:
			return i
		}
	}
	return 0
}

// invalidUTF8At is the byte offset of the first invalid UTF-8 sequence in s.
func invalidUTF8At(s string) int {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size <= 1 {
				return i
			}
		}
	}
	return len(s)
}
