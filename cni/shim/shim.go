package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// As cni/plugin.py and cni/records.py have them.
var supportedVersions = []string{"0.4.0", "1.0.0", "1.1.0"}

const (
	newestVersion   = "1.1.0"
	defaultStateDir = "/var/lib/nftpolicy"
	defaultSocket   = "/run/nftpolicy/cni.sock"
	defaultTimeout  = 10.0 // seconds
	maxTimeout      = 3600
	maxContainerID  = 200 // characters

	// How long past timeoutSeconds the enforcer's answer may take: it waits at
	// most timeoutSeconds for its sync, and then answers.
	replyGrace = 5 * time.Second
	maxReply   = 64 << 20 // bytes
)

// Error codes: the CNI spec's, and cni/plugin.py's own.
const (
	incompatibleVersion = 1
	invalidEnvironment  = 4
	ioFailure           = 5
	decodeFailure       = 6
	invalidConfig       = 7
	tryAgainLater       = 11
	pluginNotAvailable  = 50
	internalError       = 101
)

type cniError struct {
	code    int
	msg     string
	details string
}

func (e *cniError) Error() string { return e.msg }

func fail(code int, format string, args ...interface{}) *cniError {
	return &cniError{code: code, msg: fmt.Sprintf(format, args...)}
}

// request and reply are the exchange with the enforcer (enforcer/node/cni_server.py).
type request struct {
	Command string            `json:"command"`
	Env     map[string]string `json:"env"`
	Stdin   string            `json:"stdin"`
}

type reply struct {
	Code   *int   `json:"code"`
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
}

// invocation is one CNI call as the runtime made it.
type invocation struct {
	command string
	env     map[string]string // the CNI_* variables
	config  string            // stdin
	conf    map[string]json.RawMessage
	version json.RawMessage // cniVersion, as every answer echoes it
	stdout  io.Writer
	stderr  io.Writer
}

// settings are what it takes to reach the enforcer, or to do without it.
type settings struct {
	stateDir string
	socket   string
	timeout  time.Duration
}

// run answers one call and returns the exit code.
func run(env map[string]string, stdin io.Reader, stdout, stderr io.Writer) (code int) {
	c := &invocation{command: env["CNI_COMMAND"], env: env, version: json.RawMessage(`"` + newestVersion + `"`),
		stdout: stdout, stderr: stderr}
	defer func() { // a bug still gets the runtime a CNI error
		if r := recover(); r != nil {
			code = c.writeError(fail(internalError, "nftpolicy internal error: %v", r))
		}
	}()
	code, err := c.run(stdin)
	if err != nil {
		return c.writeError(err)
	}
	return code
}

func (c *invocation) run(stdin io.Reader) (int, error) {
	if c.command != "" { // as cni/plugin.py: without a command, stdin is not read
		data, err := io.ReadAll(stdin)
		if err != nil {
			return 0, fail(ioFailure, "cannot read the network configuration on stdin: %v", err)
		}
		c.config = string(data)
	}
	if err := c.parse(); err != nil {
		return 0, err
	}
	if c.command == "VERSION" {
		c.stdout.Write(encode(struct {
			CniVersion        json.RawMessage `json:"cniVersion"`
			SupportedVersions []string        `json:"supportedVersions"`
		}{c.version, supportedVersions}))
		return 0, nil
	}
	version, ok := c.supportedVersion()
	if !ok {
		return 0, &cniError{code: incompatibleVersion, msg: fmt.Sprintf("cniVersion %s is not supported", c.versionText()),
			details: "supported: " + strings.Join(supportedVersions, ", ")}
	}
	s, err := c.settings()
	if err != nil {
		return 0, err
	}
	switch c.command {
	case "ADD", "DEL", "CHECK":
	case "GC", "STATUS":
		if version != newestVersion {
			return 0, fail(invalidEnvironment, "CNI_COMMAND %s is not supported for cniVersion %s", pyRepr(c.command), version)
		}
	default:
		return 0, fail(invalidEnvironment, "CNI_COMMAND %s is not supported for cniVersion %s", pyRepr(c.command), version)
	}
	r, err := forward(s, request{Command: "CNI", Env: c.env, Stdin: c.config})
	if err != nil {
		return c.withoutEnforcer(s, fmt.Sprintf("enforcer at %s unreachable: %s", s.socket, describe(err)))
	}
	io.WriteString(c.stdout, r.Stdout)
	io.WriteString(c.stderr, r.Stderr)
	if *r.Code < 0 || *r.Code > 255 {
		return 1, nil
	}
	return *r.Code, nil
}

// parse reads the network configuration: a JSON object, or nothing.
func (c *invocation) parse() error {
	c.conf = map[string]json.RawMessage{}
	if strings.TrimSpace(c.config) == "" {
		return nil
	}
	var value json.RawMessage
	if err := json.Unmarshal([]byte(c.config), &value); err != nil {
		return fail(decodeFailure, "network configuration on stdin is not JSON: %v", err)
	}
	if value[0] != '{' {
		return fail(decodeFailure, "network configuration on stdin must be a JSON object")
	}
	if err := json.Unmarshal(value, &c.conf); err != nil {
		return fail(decodeFailure, "network configuration on stdin is not JSON: %v", err)
	}
	if v, ok := c.conf["cniVersion"]; ok && truthy(v) { // as Python's `conf.get("cniVersion") or "1.1.0"`
		c.version = compact(v)
	}
	return nil
}

func (c *invocation) supportedVersion() (string, bool) {
	var version string
	if json.Unmarshal(c.version, &version) != nil {
		return "", false
	}
	for _, v := range supportedVersions {
		if v == version {
			return version, true
		}
	}
	return version, false
}

// versionText is cniVersion as cni/plugin.py prints it: a string as it is, anything else as JSON.
func (c *invocation) versionText() string {
	var version string
	if json.Unmarshal(c.version, &version) == nil {
		return version
	}
	return string(c.version)
}

// settings checks, with cni/plugin.py's messages, the options the shim needs itself.
func (c *invocation) settings() (settings, error) {
	s := settings{stateDir: defaultStateDir, socket: defaultSocket}
	for _, field := range []struct {
		name  string
		value *string
	}{{"stateDir", &s.stateDir}, {"socket", &s.socket}} {
		raw, ok := c.conf[field.name]
		if !ok {
			continue
		}
		var path interface{}
		if json.Unmarshal(raw, &path) != nil {
			return s, fail(invalidConfig, "%s: must be a path", field.name)
		}
		text, isString := path.(string)
		if !isString || text == "" || strings.ContainsRune(text, 0) {
			return s, fail(invalidConfig, "%s: must be a path", field.name)
		}
		*field.value = text
	}
	seconds := defaultTimeout
	if raw, ok := c.conf["timeoutSeconds"]; ok {
		decoder := json.NewDecoder(bytes.NewReader(raw))
		decoder.UseNumber()
		var value interface{}
		decoder.Decode(&value) // raw is valid JSON: it came out of the parsed configuration
		number, valid := value.(json.Number)
		if valid {
			var err error
			seconds, err = number.Float64()
			valid = err == nil && seconds > 0 && seconds <= maxTimeout
		}
		if !valid {
			return s, fail(invalidConfig, "timeoutSeconds: must be a number of seconds above 0 and at most %d", maxTimeout)
		}
	}
	s.timeout = time.Duration(seconds * float64(time.Second))
	return s, nil
}

// forward sends the call to the enforcer and returns its answer.
func forward(s settings, req request) (*reply, error) {
	conn, err := net.DialTimeout("unix", s.socket, s.timeout)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(s.timeout + replyGrace)); err != nil {
		return nil, err
	}
	line, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write(append(line, '\n')); err != nil {
		return nil, err
	}
	answer, err := bufio.NewReader(io.LimitReader(conn, maxReply)).ReadBytes('\n')
	if err != nil && !(err == io.EOF && len(answer) > 0) {
		if err == io.EOF {
			return nil, errors.New("the enforcer closed the connection without answering")
		}
		return nil, err
	}
	var r reply
	if err := json.Unmarshal(answer, &r); err != nil || r.Code == nil {
		return nil, fmt.Errorf("the enforcer's answer is not a CNI reply: %.200q", answer)
	}
	return &r, nil
}

// withoutEnforcer answers a call the enforcer could not take.
func (c *invocation) withoutEnforcer(s settings, problem string) (int, error) {
	switch c.command {
	case "ADD":
		return c.addWithoutEnforcer(s, problem)
	case "DEL":
		return c.delWithoutEnforcer(s, problem)
	case "STATUS":
		return 0, fail(pluginNotAvailable, "%s", problem)
	default: // CHECK, GC
		return 0, fail(tryAgainLater, "%s", problem)
	}
}

// addWithoutEnforcer: try again later; with failOpen, pass prevResult back and
// spool the call for the enforcer.
func (c *invocation) addWithoutEnforcer(s settings, problem string) (int, error) {
	failOpen := false
	if raw, ok := c.conf["failOpen"]; ok {
		var value interface{}
		if json.Unmarshal(raw, &value) != nil {
			return 0, fail(invalidConfig, "failOpen: must be true or false")
		}
		if failOpen, ok = value.(bool); !ok {
			return 0, fail(invalidConfig, "failOpen: must be true or false")
		}
	}
	prev, ok := c.conf["prevResult"]
	if !ok || string(compact(prev)) == "null" {
		return 0, fail(invalidConfig, "missing prevResult: nftpolicy must be called as a chained plugin, after bridge")
	}
	if prev = compact(prev); prev[0] != '{' {
		return 0, fail(invalidConfig, "prevResult: must be an object")
	}
	if !failOpen {
		return 0, fail(tryAgainLater, "%s: try again later (no pod starts unprotected; failOpen is false)", problem)
	}
	id, err := c.containerID("cannot spool the ADD for the enforcer")
	if err != nil {
		return 0, err
	}
	if err := spool(s.stateDir, id, request{Command: "CNI", Env: c.env, Stdin: c.config}); err != nil {
		return 0, fail(ioFailure, "cannot spool the ADD for the enforcer in %s: %v", filepath.Join(s.stateDir, "pending"), err)
	}
	fmt.Fprintf(c.stderr, "nftpolicy: container %s: %s; failOpen: the pod runs unprotected until the enforcer programs it\n", id, problem)
	c.stdout.Write(prev)
	return 0, nil
}

// delWithoutEnforcer removes the pod's record (and a spooled ADD) and succeeds.
func (c *invocation) delWithoutEnforcer(s settings, problem string) (int, error) {
	id, err := c.containerID("cannot remove the pod record")
	if err != nil {
		return 0, err
	}
	for _, dir := range []string{"pods", "pending"} {
		if err := os.Remove(filepath.Join(s.stateDir, dir, id+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, fail(ioFailure, "cannot remove the pod record: %v", err)
		}
	}
	fmt.Fprintf(c.stderr, "nftpolicy: container %s: %s; its record is removed, the enforcer drops the pod when it next reads the records\n", id, problem)
	return 0, nil
}

// containerID is CNI_CONTAINERID, checked as cni/records.py checks it: it names files.
func (c *invocation) containerID(doing string) (string, error) {
	id := c.env["CNI_CONTAINERID"]
	if id == "" {
		return "", fail(invalidEnvironment, "missing environment variable CNI_CONTAINERID")
	}
	if strings.ContainsAny(id, "/\x00") || strings.HasPrefix(id, ".") || utf8.RuneCountInString(id) > maxContainerID {
		short := []rune(id)
		if len(short) > 80 {
			short = short[:80]
		}
		return "", fail(ioFailure, "%s: invalid container ID %s", doing, pyRepr(string(short)))
	}
	return id, nil
}

// spool writes the call atomically to <stateDir>/pending/<id>.json.
func spool(stateDir, id string, req request) error {
	dir := filepath.Join(stateDir, "pending")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, fmt.Sprintf(".tmp-%s-%d", id, os.Getpid()))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, id+".json"))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func (c *invocation) writeError(err error) int {
	e, ok := err.(*cniError)
	if !ok {
		e = fail(internalError, "nftpolicy internal error: %v", err)
	}
	c.stdout.Write(encode(struct {
		CniVersion json.RawMessage `json:"cniVersion"`
		Code       int             `json:"code"`
		Msg        string          `json:"msg"`
		Details    string          `json:"details,omitempty"`
	}{c.version, e.code, e.msg, e.details}))
	return 1
}

// encode is JSON without a trailing newline or HTML escapes, as Python writes it.
func encode(v interface{}) []byte {
	var b bytes.Buffer
	encoder := json.NewEncoder(&b)
	encoder.SetEscapeHTML(false)
	if err := encoder.Encode(v); err != nil {
		panic(err) // only values built here are encoded
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

func compact(raw json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}

// truthy is Python's truth of a JSON value: null, false, 0, "", [] and {} are false.
func truthy(raw json.RawMessage) bool {
	decoder := json.NewDecoder(bytes.NewReader(raw))
	decoder.UseNumber()
	var value interface{}
	if decoder.Decode(&value) != nil {
		return false
	}
	switch v := value.(type) {
	case nil:
		return false
	case bool:
		return v
	case string:
		return v != ""
	case json.Number:
		f, err := v.Float64()
		return err != nil || f != 0
	case []interface{}:
		return len(v) > 0
	case map[string]interface{}:
		return len(v) > 0
	}
	return true
}

// describe is an error without the operation and address net puts in front.
func describe(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	return err.Error()
}

// pyRepr quotes a string as Python's repr() does, as cni/plugin.py's messages show them.
func pyRepr(s string) string {
	quote := '\''
	if strings.ContainsRune(s, '\'') && !strings.ContainsRune(s, '"') {
		quote = '"'
	}
	var b strings.Builder
	b.WriteRune(quote)
	for _, r := range s {
		switch {
		case r == quote || r == '\\':
			b.WriteRune('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x100 && !unicode.IsPrint(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case r < 0x10000 && !unicode.IsPrint(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		case !unicode.IsPrint(r):
			fmt.Fprintf(&b, `\U%08x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteRune(quote)
	return b.String()
}
