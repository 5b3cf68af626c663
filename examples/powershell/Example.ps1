<#
.SYNOPSIS
  sidecar end to end in PowerShell (Windows PowerShell 5.1 or PowerShell 7; no module):
  token, UUIDs, sign a fee note with its PDF, deposit it with the CNS, follow it until
  delivered, then a PID v2 simulation.

.EXAMPLE
  powershell -ExecutionPolicy Bypass -File examples\powershell\Example.ps1 [-BaseUrl URL] [-TokenFile FILE]

.NOTES
  Environment (parameters win): SIDECAR_URL (default http://127.0.0.1:7420),
  SIDECAR_TOKEN_FILE (default %SIDECAR_HOME%\default.token, else the per-user location),
  SIDECAR_SAMPLES (folder with fee-note.xml, fee-note.pdf, pid-simulation.xml; default
  profiles\samples of the distribution), SIDECAR_WAIT_SECONDS (default 60).
  Exits non-zero at the first step that fails.
#>
param(
  [string]$BaseUrl = $(if ($env:SIDECAR_URL) { $env:SIDECAR_URL } else { "http://127.0.0.1:7420" }),
  [string]$TokenFile = ""
)
$ErrorActionPreference = "Stop"
$ProgressPreference = "SilentlyContinue"  # the progress bar slows Invoke-WebRequest down a lot
$BaseUrl = $BaseUrl.TrimEnd("/")

function Fail([string]$Message) {
  [Console]::Error.WriteLine("FAILED: $Message")
  exit 1
}

function Default-TokenFile {
  if ($env:SIDECAR_TOKEN_FILE) { return $env:SIDECAR_TOKEN_FILE }
  if ($env:SIDECAR_HOME) { return (Join-Path $env:SIDECAR_HOME "default.token") }
  if ($env:LOCALAPPDATA) { return (Join-Path $env:LOCALAPPDATA "sidecar\default.token") }
  $config = if ($env:XDG_CONFIG_HOME) { $env:XDG_CONFIG_HOME } else { Join-Path $HOME ".config" }
  return (Join-Path $config "sidecar/default.token")
}

function Samples-Folder {
  if ($env:SIDECAR_SAMPLES) { return $env:SIDECAR_SAMPLES }
  return (Join-Path $PSScriptRoot "..\..\profiles\samples")
}

# One request with the token. JSON answers come back parsed; -OutFile keeps the bytes
# as they are (a signed document must not be re-serialized). A status >= 400 stops
# the script with the problem+json, whose "code" is the stable part to act on.
function Call-Sidecar {
  param([string]$Method, [string]$Path, [string]$InFile, [byte[]]$Body, [string]$ContentType, [string]$OutFile)
  $arguments = @{
    Method = $Method
    Uri = $(if ($Path.StartsWith("http")) { $Path } else { "$BaseUrl$Path" })
    Headers = @{ Authorization = "Bearer $script:Token" }
    UseBasicParsing = $true
    TimeoutSec = 60
  }
  if ($ContentType) { $arguments.ContentType = $ContentType }
  if ($InFile) { $arguments.InFile = $InFile }
  if ($Body) { $arguments.Body = $Body }
  try {
    if ($OutFile) {
      Invoke-WebRequest @arguments -OutFile $OutFile | Out-Null
      return $null
    }
    return (Invoke-RestMethod @arguments)
  } catch {
    $status = $null
    if ($_.Exception.Response) { $status = [int]$_.Exception.Response.StatusCode }
    if ($status) { Fail "$Method $Path answered ${status}: $($_.ErrorDetails.Message)" }
    Fail "$Method ${Path}: no answer from $BaseUrl ($($_.Exception.Message))"
  }
}

function Fill-Uuid([string]$Xml, [string]$Uuid) {
  $empty = "<UUID></UUID>"
  $at = $Xml.IndexOf($empty)
  if ($at -lt 0) { Fail "the sample has no empty <UUID></UUID> to fill" }
  return $Xml.Substring(0, $at) + "<UUID>$Uuid</UUID>" + $Xml.Substring($at + $empty.Length)
}

$utf8 = New-Object System.Text.UTF8Encoding($false)
if (-not $TokenFile) { $TokenFile = Default-TokenFile }
$samples = Samples-Folder
$waitSeconds = if ($env:SIDECAR_WAIT_SECONDS) { [double]$env:SIDECAR_WAIT_SECONDS } else { 60 }
$work = Join-Path ([System.IO.Path]::GetTempPath()) ("sidecar-" + [guid]::NewGuid())
New-Item -ItemType Directory -Path $work | Out-Null

try {
  Write-Output "1. token: reading $TokenFile"
  try { $script:Token = ([System.IO.File]::ReadAllText($TokenFile)).Trim() }
  catch { Fail "cannot read the token file $TokenFile; set SIDECAR_TOKEN_FILE" }

  $health = Call-Sidecar -Method GET -Path "/v1/health"
  Write-Output "2. daemon at ${BaseUrl}: status $($health.status), version $($health.version)"

  $uuids = (Call-Sidecar -Method GET -Path "/v1/uuids?count=2").uuids
  $noteUuid = $uuids[0]
  $pidUuid = $uuids[1]
  Write-Output "3. UUIDs: fee note $noteUuid, PID simulation $pidUuid"

  # multipart/form-data by hand: Invoke-RestMethod -Form exists only in PowerShell 7.
  $boundary = "sidecar-" + [guid]::NewGuid()
  $note = Fill-Uuid ([System.IO.File]::ReadAllText((Join-Path $samples "fee-note.xml"))) $noteUuid
  $stream = New-Object System.IO.MemoryStream
  $parts = @(
    @("xml", "fee-note.xml", "application/xml", $utf8.GetBytes($note)),
    @("pdf", "fee-note.pdf", "application/pdf", [System.IO.File]::ReadAllBytes((Join-Path $samples "fee-note.pdf")))
  )
  foreach ($part in $parts) {
    $head = "--$boundary`r`nContent-Disposition: form-data; name=`"$($part[0])`"; filename=`"$($part[1])`"`r`nContent-Type: $($part[2])`r`n`r`n"
    $bytes = $utf8.GetBytes($head); $stream.Write($bytes, 0, $bytes.Length)
    $stream.Write($part[3], 0, $part[3].Length)
    $bytes = $utf8.GetBytes("`r`n"); $stream.Write($bytes, 0, $bytes.Length)
  }
  $bytes = $utf8.GetBytes("--$boundary--`r`n"); $stream.Write($bytes, 0, $bytes.Length)
  $signedFile = Join-Path $work "fee-note-signed.xml"
  Call-Sidecar -Method POST -Path "/v1/forms/fee-note/sign" -Body $stream.ToArray() `
    -ContentType "multipart/form-data; boundary=$boundary" -OutFile $signedFile | Out-Null
  if (-not ([System.IO.File]::ReadAllText($signedFile)).Contains("SignatureValue")) { Fail "the answer holds no signature" }
  Write-Output "4. fee note signed: $((Get-Item $signedFile).Length) bytes of XAdES-signed XML"

  $accepted = Call-Sidecar -Method POST -Path "/v1/cns/fee-notes" -InFile $signedFile -ContentType "application/xml"
  if ($accepted.uuid -ne $noteUuid) { Fail "deposited under another UUID: $($accepted | ConvertTo-Json -Compress)" }
  Write-Output "5. deposited: status $($accepted.status), following $($accepted.status_url)"

  $deadline = (Get-Date).AddSeconds($waitSeconds)
  while ($true) {
    $message = Call-Sidecar -Method GET -Path $accepted.status_url
    if (@("delivered", "rejected", "failed") -contains $message.status) { break }
    if ((Get-Date) -gt $deadline) { Fail "still '$($message.status)' after $waitSeconds s" }
    Start-Sleep -Milliseconds 500
  }
  Write-Output "6. fee note ${noteUuid}: $($message.status) after $($message.attempts) attempt(s)"
  if ($message.status -ne "delivered") { Fail "the CNS did not take the fee note: $($message.reasons | ConvertTo-Json -Compress)" }

  $pidRequest = Fill-Uuid ([System.IO.File]::ReadAllText((Join-Path $samples "pid-simulation.xml"))) $pidUuid
  $answerFile = Join-Path $work "pid-simulation-answer.xml"
  Call-Sidecar -Method POST -Path "/v1/cns/pid/simulations" -Body $utf8.GetBytes($pidRequest) `
    -ContentType "application/xml" -OutFile $answerFile | Out-Null
  Write-Output "7. PID simulation answered:"
  Write-Output ([System.IO.File]::ReadAllText($answerFile))
  Write-Output "done: fee note $noteUuid delivered"
  exit 0
} finally {
  Remove-Item -Recurse -Force $work -ErrorAction SilentlyContinue
}
