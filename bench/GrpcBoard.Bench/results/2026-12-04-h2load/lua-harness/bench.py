import socket, sys, time, re, os
PORT=int(os.environ.get('PORT','7801'))
def mp_str(b):
    if isinstance(b,str): b=b.encode()
    n=len(b)
    if n<32: return bytes([0xa0|n])+b
    if n<256: return b'\xd9'+bytes([n])+b
    return b'\xda'+n.to_bytes(2,'big')+b
def mp_arr(items):
    n=len(items)
    h=bytes([0x90|n]) if n<16 else b'\xdc'+n.to_bytes(2,'big')
    return h+b''.join(items)
class R:
    def __init__(s):
        s.s=socket.create_connection(('127.0.0.1',PORT)); s.f=s.s.makefile('rb')
    def cmd(s,*a):
        out=[b'*%d\r\n'%len(a)]
        for x in a:
            if isinstance(x,int): x=str(x)
            if isinstance(x,str): x=x.encode()
            out.append(b'$%d\r\n'%len(x)+x+b'\r\n')
        s.s.sendall(b''.join(out)); return s.read()
    def read(s):
        l=s.f.readline()
        t=l[:1]; r=l[1:-2]
        if t==b'+': return r
        if t==b'-': raise Exception(r)
        if t==b':': return int(r)
        if t==b'$':
            n=int(r)
            if n<0: return None
            d=s.f.read(n+2); return d[:-2]
        if t==b'*':
            n=int(r); return [s.read() for _ in range(n)] if n>=0 else None
r=R()
script=open(sys.argv[1]).read()
N=int(sys.argv[2]) if len(sys.argv)>2 else 3000
r.cmd('FLUSHALL')
base='gbbench-1:{bench-w}:'
meta=base+'meta'
# populate tasks hash and timers
r.cmd('EVAL',"for i=1,400000 do redis.call('HSET',KEYS[1],string.format('t%07d',i),string.rep('x',214)) end for i=1,200000 do redis.call('ZADD',KEYS[2],1796419489421+i,'1|u'..i) end return 1",2,base+'tasks',base+'timers')
sha=r.cmd('SCRIPT','LOAD',script).decode()
blob=bytes(range(256))[:214]
prev=''
rev=1000; task=1
r.cmd('CONFIG','RESETSTAT')
B=23
t0=time.time()
for i in range(N):
    events=[]; T=[mp_str('T')]; Z=[mp_str('Z')]
    for k in range(B):
        rev+=1; events+= [mp_str(str(rev)), mp_str(blob)]
        tid='t%07d'%task; task+=1
        T+=[mp_str(tid), mp_str(str(k+1))]
        Z+=[mp_str('1796419489421'), mp_str('1|'+tid)]
    C=[mp_str('C')]+[mp_str(x) for x in ['c1','0','c2','9925','c3','90075','c4','0','c5','0','c6','0']]
    ops=[mp_arr(T),mp_arr(Z),mp_arr(C),mp_arr([mp_str('E')])]
    packed=mp_arr([mp_arr(events),mp_arr(ops)])
    new='inst:%d'%i
    res=r.cmd('EVALSHA',sha,2,meta,base+'never','' if i==0 else prev,new,str(rev),base+'ch','note',packed,'inst','3000','1000','1','0')
    if res[0]!=1: print('refused',res); break
    prev=new
el=time.time()-t0
st=r.cmd('INFO','commandstats').decode()
m=re.search(r'cmdstat_evalsha:calls=(\d+),usec=(\d+),usec_per_call=([\d.]+)',st)
print(sys.argv[1], 'evalsha usec/call', m.group(3), 'calls', m.group(1), 'len', len(packed))
for line in st.splitlines():
    if line.startswith('cmdstat_') and 'evalsha' not in line: 
        mm=re.match(r'cmdstat_(\w+\|?\w*):calls=(\d+),usec=(\d+),usec_per_call=([\d.]+)',line)
        if mm and int(mm.group(2))>=N: print('  ',mm.group(1),'per batch', round(int(mm.group(3))/N,1))
