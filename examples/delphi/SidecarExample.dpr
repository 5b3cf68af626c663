{ sidecar end to end in Delphi (10.4 Sydney or later; TNetHTTPClient, System.JSON; no
  component to install): token, UUIDs, sign a fee note with its PDF, deposit it with the
  CNS, follow it until delivered, then a PID v2 simulation.

    SidecarExample.exe [BASE_URL [TOKEN_FILE]]

  Environment (arguments win): SIDECAR_URL (default http://127.0.0.1:7420),
  SIDECAR_TOKEN_FILE (default %SIDECAR_HOME%\default.token, else
  %LOCALAPPDATA%\sidecar\default.token), SIDECAR_SAMPLES (folder with fee-note.xml,
  fee-note.pdf, pid-simulation.xml; default profiles\samples of the distribution),
  SIDECAR_WAIT_SECONDS (default 60). Exits non-zero at the first step that fails. }
program SidecarExample;

{$APPTYPE CONSOLE}

uses
  System.SysUtils, System.Classes, System.IOUtils, System.JSON, System.DateUtils,
  System.Net.HttpClient, System.Net.HttpClientComponent, System.Net.Mime, System.Net.URLClient;

type
  EFailed = class(Exception);

var
  BaseUrl, Token: string;
  Http: TNetHTTPClient;

function EnvOr(const Name, Fallback: string): string;
begin
  Result := GetEnvironmentVariable(Name);
  if Result = '' then
    Result := Fallback;
end;

function DefaultTokenFile: string;
begin
  Result := GetEnvironmentVariable('SIDECAR_TOKEN_FILE');
  if Result <> '' then
    Exit;
  if GetEnvironmentVariable('SIDECAR_HOME') <> '' then
    Exit(TPath.Combine(GetEnvironmentVariable('SIDECAR_HOME'), 'default.token'));
  Result := TPath.Combine(TPath.Combine(GetEnvironmentVariable('LOCALAPPDATA'), 'sidecar'), 'default.token');
end;

function SamplesFolder: string;
var
  Candidate: string;
begin
  Result := GetEnvironmentVariable('SIDECAR_SAMPLES');
  if Result <> '' then
    Exit;
  for Candidate in ['profiles\samples', '..\profiles\samples', '..\..\profiles\samples',
    '..\..\..\profiles\samples'] do
    if TFile.Exists(TPath.Combine(Candidate, 'fee-note.xml')) then
      Exit(Candidate);
  Result := 'profiles\samples';
end;

{ One request with the token; the answer. A status >= 400 fails with the problem+json,
  whose "code" is the stable, machine-readable part. }
function Call(const Method, Path: string; Body: TStream; const ContentType: string): IHTTPResponse;
var
  Url: string;
  Headers: TNetHeaders;
begin
  if Path.StartsWith('http') then
    Url := Path
  else
    Url := BaseUrl + Path;
  Headers := [TNameValuePair.Create('Authorization', 'Bearer ' + Token)];
  if ContentType <> '' then
    Headers := Headers + [TNameValuePair.Create('Content-Type', ContentType)];
  try
    Result := Http.Execute(Method, TURI.Create(Url), Body, nil, Headers);
  except
    on E: ENetHTTPClientException do
      raise EFailed.CreateFmt('%s %s: no answer from %s (%s)', [Method, Path, BaseUrl, E.Message]);
  end;
  if Result.StatusCode >= 400 then
    raise EFailed.CreateFmt('%s %s answered %d: %s',
      [Method, Path, Result.StatusCode, Result.ContentAsString(TEncoding.UTF8)]);
end;

function CallJson(const Method, Path: string): TJSONObject;
begin
  Result := TJSONObject.ParseJSONValue(Call(Method, Path, nil, '').ContentAsString(TEncoding.UTF8)) as TJSONObject;
end;

function FillUuid(const Xml, Uuid: string): string;
begin
  if Pos('<UUID></UUID>', Xml) = 0 then
    raise EFailed.Create('the sample has no empty <UUID></UUID> to fill');
  Result := StringReplace(Xml, '<UUID></UUID>', '<UUID>' + Uuid + '</UUID>', []);
end;

procedure Run;
var
  TokenFile, Samples, NoteUuid, PidUuid, StatusUrl, Status: string;
  Health, Uuids, Accepted, Message: TJSONObject;
  Form: TMultipartFormData;
  Note, Pid: TStringStream;
  Signed: TBytesStream;
  Response: IHTTPResponse;
  Deadline: TDateTime;
  WaitSeconds: Integer;
begin
  BaseUrl := EnvOr('SIDECAR_URL', 'http://127.0.0.1:7420');
  if ParamCount >= 1 then
    BaseUrl := ParamStr(1);
  if BaseUrl.EndsWith('/') then
    BaseUrl := BaseUrl.Substring(0, BaseUrl.Length - 1);
  TokenFile := DefaultTokenFile;
  if ParamCount >= 2 then
    TokenFile := ParamStr(2);
  Samples := SamplesFolder;
  WaitSeconds := StrToIntDef(EnvOr('SIDECAR_WAIT_SECONDS', '60'), 60);

  Writeln('1. token: reading ', TokenFile);
  try
    Token := Trim(TFile.ReadAllText(TokenFile, TEncoding.UTF8));
  except
    on E: Exception do
      raise EFailed.CreateFmt('cannot read the token file %s (%s); set SIDECAR_TOKEN_FILE', [TokenFile, E.Message]);
  end;

  Health := CallJson('GET', '/v1/health');
  try
    Writeln(Format('2. daemon at %s: status %s, version %s',
      [BaseUrl, Health.GetValue<string>('status'), Health.GetValue<string>('version')]));
  finally
    Health.Free;
  end;

  Uuids := CallJson('GET', '/v1/uuids?count=2');
  try
    NoteUuid := Uuids.GetValue<TJSONArray>('uuids').Items[0].Value;
    PidUuid := Uuids.GetValue<TJSONArray>('uuids').Items[1].Value;
  finally
    Uuids.Free;
  end;
  Writeln(Format('3. UUIDs: fee note %s, PID simulation %s', [NoteUuid, PidUuid]));

  Form := TMultipartFormData.Create;
  Note := TStringStream.Create(FillUuid(TFile.ReadAllText(TPath.Combine(Samples, 'fee-note.xml'), TEncoding.UTF8),
    NoteUuid), TEncoding.UTF8);
  Signed := TBytesStream.Create;
  try
    Form.AddStream('xml', Note, 'fee-note.xml', 'application/xml');
    Form.AddFile('pdf', TPath.Combine(Samples, 'fee-note.pdf'), 'application/pdf');
    Response := Call('POST', '/v1/forms/fee-note/sign', Form.Stream, Form.MimeTypeHeader);
    // The signed bytes go on unchanged: re-encoding them could break the signature.
    Signed.CopyFrom(Response.ContentStream, 0);
    if Pos('SignatureValue', TEncoding.UTF8.GetString(Signed.Bytes, 0, Signed.Size)) = 0 then
      raise EFailed.Create('the answer holds no signature');
    Writeln(Format('4. fee note signed: %d bytes of XAdES-signed XML', [Signed.Size]));

    Signed.Position := 0;
    Accepted := TJSONObject.ParseJSONValue(
      Call('POST', '/v1/cns/fee-notes', Signed, 'application/xml').ContentAsString(TEncoding.UTF8)) as TJSONObject;
  finally
    Signed.Free;
    Note.Free;
    Form.Free;
  end;
  try
    if Accepted.GetValue<string>('uuid') <> NoteUuid then
      raise EFailed.Create('deposited under another UUID: ' + Accepted.ToJSON);
    StatusUrl := Accepted.GetValue<string>('status_url');
    Writeln(Format('5. deposited: status %s, following %s', [Accepted.GetValue<string>('status'), StatusUrl]));
  finally
    Accepted.Free;
  end;

  Deadline := IncSecond(Now, WaitSeconds);
  while True do
  begin
    Message := CallJson('GET', StatusUrl);
    Status := Message.GetValue<string>('status');
    if (Status = 'delivered') or (Status = 'rejected') or (Status = 'failed') then
      Break;
    Message.Free;
    if Now > Deadline then
      raise EFailed.CreateFmt('still ''%s'' after %d s', [Status, WaitSeconds]);
    Sleep(500);
  end;
  try
    Writeln(Format('6. fee note %s: %s after %d attempt(s)', [NoteUuid, Status, Message.GetValue<Integer>('attempts')]));
    if Status <> 'delivered' then
      raise EFailed.Create('the CNS did not take the fee note: ' + Message.ToJSON);
  finally
    Message.Free;
  end;

  Pid := TStringStream.Create(FillUuid(TFile.ReadAllText(TPath.Combine(Samples, 'pid-simulation.xml'),
    TEncoding.UTF8), PidUuid), TEncoding.UTF8);
  try
    Response := Call('POST', '/v1/cns/pid/simulations', Pid, 'application/xml');
    Writeln('7. PID simulation answered:');
    Writeln(Response.ContentAsString(TEncoding.UTF8));
  finally
    Pid.Free;
  end;
  Writeln(Format('done: fee note %s delivered', [NoteUuid]));
end;

begin
  Http := TNetHTTPClient.Create(nil);
  try
    Http.ConnectionTimeout := 10000;
    Http.ResponseTimeout := 60000;
    try
      Run;
      ExitCode := 0;
    except
      on E: Exception do
      begin
        Writeln(ErrOutput, 'FAILED: ', E.Message);
        ExitCode := 1;
      end;
    end;
  finally
    Http.Free;
  end;
end.
